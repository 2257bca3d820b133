"""The web pages in a real browser: Debian's chromium driven by Playwright, against
`dproxy serve`, with skopeo pulling through the proxy alongside.

Every page is screenshotted at 1280x800 into `DPROXY_TEST_SCREENSHOTS` (or a directory under
pytest's tmp dir), so a person can look at what the pages show.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.conftest import USER, Images, start_dproxy
from tests.support import UpstreamRegistry
from tests.support.dproxy import ROOT_PASSWORD, DproxyServer
from tests.support.skopeo import copy_to_dir

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("DPROXY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
OWNER = 50
CLEANUP_DEADLINE = 30.0  # seconds for the background cleanup to empty a cleared cache


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamRegistry
) -> Iterator[DproxyServer]:
    """One dproxy whose cleanup runs every 0.2 s without a read grace, so a cleared cache
    empties within a second; each test works in groups of its own."""
    env = {"DPROXY_CLEANUP_INTERVAL": "0.2", "DPROXY_CLEANUP_READ_GRACE": "0"}
    server = start_dproxy(tmp_path_factory.mktemp("web"), upstream.url, env=env)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("DPROXY_TEST_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# Module-scoped: the sync driver keeps an event loop running in this thread while it lives,
# which asyncio tests of other modules (pytest-asyncio) cannot share.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # A missing browser is a failure, not a skip: `make tools` installs Debian's chromium.
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make tools`"
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Debian's chromium, never a downloaded browser build.
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser, proxy: DproxyServer) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=VIEWPORT, base_url=proxy.url)
    context.set_default_timeout(15_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=proxy.url)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def _shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"))


def _group(proxy: DproxyServer, level: int) -> str:
    """A new group with alice as a member at `level`."""
    path = f"web{uuid.uuid4().hex[:8]}"
    proxy.add_group(path)
    proxy.add_member(path, USER[0], level)
    return path


def _sign_in(page: Page, username: str, password: str) -> None:
    page.goto("/users/sign_in")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def _pull(proxy: DproxyServer, group: str, dest: Path, creds: tuple[str, str] = USER) -> bool:
    result = copy_to_dir(proxy.image(group, "alpine:latest"), dest, creds=creds, check=False)
    return result.ok


def _wait_for_empty_cache(page: Page) -> None:
    """The cleanup deletes the cleared rows in the background: reload until they are gone."""
    deadline = time.monotonic() + CLEANUP_DEADLINE
    while not page.locator("#empty-cache").is_visible():
        assert time.monotonic() < deadline, "the cleared cache did not empty in time"
        time.sleep(0.5)
        page.reload()


def test_sign_in_returns_to_the_page_asked_for_and_sign_out_ends_the_session(
    page: Page, proxy: DproxyServer, screenshots: Path
) -> None:
    page.goto("/groups/grp/-/dependency_proxy")
    expect(page).to_have_url(
        f"{proxy.url}/users/sign_in?redirect_to=%2Fgroups%2Fgrp%2F-%2Fdependency_proxy"
    )
    _shot(page, screenshots, "01-sign-in")

    page.get_by_label("Username").fill(USER[0])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid username or password")
    # The username stays filled in, and the password field has the focus.
    expect(page.get_by_label("Username")).to_have_value(USER[0])
    expect(page.get_by_label("Password")).to_be_focused()

    page.get_by_label("Password").fill(USER[1])
    page.keyboard.press("Enter")  # usable with the keyboard alone
    expect(page).to_have_url(f"{proxy.url}/groups/grp/-/dependency_proxy")
    expect(page.get_by_role("heading", name="Dependency Proxy", level=1)).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{proxy.url}/users/sign_in")
    expect(page.get_by_role("status")).to_contain_text("Signed out")
    page.goto("/")
    expect(page).to_have_url(f"{proxy.url}/users/sign_in")


def test_owner_sees_a_pulled_image_and_clears_the_cache(
    page: Page, proxy: DproxyServer, images: Images, tmp_path: Path, screenshots: Path
) -> None:
    group = _group(proxy, OWNER)
    proxy.add_group(f"{group}/team")
    assert _pull(proxy, group, tmp_path / "pull")
    _sign_in(page, *USER)

    # The landing page lists the group, and leads to its Dependency Proxy.
    expect(page.get_by_role("link", name=group, exact=True)).to_be_visible()
    _shot(page, screenshots, "02-groups")
    page.get_by_role("link", name=group, exact=True).click()
    expect(page).to_have_url(f"{proxy.url}/groups/{group}/-/dependency_proxy")

    prefix = f"{proxy.address}/{group}/dependency_proxy/containers"
    expect(page.get_by_label("Image prefix")).to_have_value(prefix)
    page.get_by_role("button", name="Copy").first.click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == prefix
    expect(page.get_by_text("Contains 1 image of")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="library/alpine:latest")
    expect(row).to_contain_text(images.oci.digest[:19])  # sha256: and 12 hex digits
    expect(row).to_contain_text("Cached")
    expect(row).to_contain_text("just now")
    # Subgroups link to their own pages.
    expect(page.get_by_role("link", name="team", exact=True)).to_have_attribute(
        "href", f"/groups/{group}/team/-/dependency_proxy"
    )
    _shot(page, screenshots, "03-dependency-proxy")

    # Sorting is a link per column header; the current order is announced with aria-sort.
    page.get_by_role("link", name="Size").click()
    expect(page.locator("th[aria-sort]")).to_contain_text("Size")

    page.get_by_role("button", name="Clear cache").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove every cached image")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    _shot(page, screenshots, "04-clear-cache-dialog")
    page.keyboard.press("Escape")  # closing it changes nothing
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text("Cached")

    page.get_by_role("button", name="Clear cache").click()
    dialog.get_by_role("button", name="Clear cache").click()
    expect(page.get_by_role("status").first).to_contain_text("Clearing the cache")
    expect(page.get_by_text("Contains 0 images of")).to_be_visible()
    _wait_for_empty_cache(page)
    expect(page.get_by_role("heading", name="No images cached yet")).to_be_visible()
    _shot(page, screenshots, "05-dependency-proxy-empty")


def test_guest_sees_no_clear_button_and_no_owner_pages(
    page: Page, proxy: DproxyServer, tmp_path: Path, screenshots: Path
) -> None:
    group = _group(proxy, 10)
    assert _pull(proxy, group, tmp_path / "pull")
    _sign_in(page, *USER)
    page.goto(f"/groups/{group}/-/dependency_proxy")
    expect(page.get_by_role("row").filter(has_text="library/alpine:latest")).to_be_visible()
    expect(page.get_by_text("Your role: Guest")).to_be_visible()
    expect(page.get_by_role("button", name="Clear cache")).to_have_count(0)
    expect(page.get_by_role("link", name="Packages and registries")).to_have_count(0)

    for path in (
        f"/groups/{group}/-/settings/packages_and_registries",
        "/admin/application_settings",
        "/groups/no-such-group/-/dependency_proxy",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    _shot(page, screenshots, "06-not-found")

    # Posting the clear form anyway (with a valid CSRF token) is a 404 too, and clears nothing.
    page.goto(f"/groups/{group}/-/dependency_proxy")
    token = page.locator("input[name=authenticity_token]").first.input_value()
    response = page.request.post(
        f"/groups/{group}/-/dependency_proxy/clear_cache",
        form={"authenticity_token": token, "confirmed": "yes"},
        max_redirects=0,
    )
    assert response.status == 404
    page.reload()
    expect(page.get_by_text("Contains 1 image of")).to_be_visible()


def test_owner_turns_the_proxy_off_and_pulls_are_refused(
    page: Page, proxy: DproxyServer, tmp_path: Path, screenshots: Path
) -> None:
    group = _group(proxy, OWNER)
    assert _pull(proxy, group, tmp_path / "before")
    _sign_in(page, *USER)
    page.goto(f"/groups/{group}/-/dependency_proxy")
    page.get_by_role("link", name="Packages and registries").click()
    expect(page).to_have_url(f"{proxy.url}/groups/{group}/-/settings/packages_and_registries")
    switch = page.get_by_role("switch", name="Enable Dependency Proxy")
    expect(switch).to_be_checked()

    # The TTL policy: a bad value is refused with a message next to the field.
    page.get_by_label("Clear items not pulled for").fill("0")
    page.get_by_role("switch", name="Automatically clear unused items").check()
    page.locator("form:has(#ttl-days)").evaluate("form => form.noValidate = true")
    page.locator("form:has(#ttl-days)").get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Enter a whole number of days from 1 to 3650.")).to_be_visible()
    page.get_by_label("Clear items not pulled for").fill("30")
    page.get_by_role("switch", name="Automatically clear unused items").check()
    page.locator("form:has(#ttl-days)").get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text("Cleanup policy saved")
    expect(page.get_by_label("Clear items not pulled for")).to_have_value("30")

    # Upstream credentials: the identity is shown afterwards, the secret never.
    page.get_by_label("Username").fill("hub-user")
    page.get_by_label("Password or access token").fill("hub-secret-value")
    page.get_by_role("button", name="Save credentials").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream credentials saved")
    expect(page.get_by_text("Pulls use the account hub-user with a stored secret")).to_be_visible()
    assert "hub-secret-value" not in page.content()
    page.get_by_role("button", name="Remove credentials").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(
        page.get_by_text("No credentials: pulls use the instance's upstream account")
    ).to_be_visible()
    _shot(page, screenshots, "07-group-settings")

    switch = page.get_by_role("switch", name="Enable Dependency Proxy")
    switch.press("Space")  # a switch, toggled from the keyboard
    expect(switch).not_to_be_checked()
    page.locator("form:has(#proxy-enabled)").get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text("Dependency Proxy disabled for this group")
    assert not _pull(proxy, group, tmp_path / "after")
    page.goto(f"/groups/{group}/-/dependency_proxy")
    expect(page.get_by_text("turned off for this group")).to_be_visible()


def test_admin_turns_the_instance_off_and_sees_the_upstream_budget(
    page: Page, proxy: DproxyServer, tmp_path: Path, screenshots: Path
) -> None:
    group = _group(proxy, 10)
    _sign_in(page, "root", ROOT_PASSWORD)
    page.get_by_role("link", name="Admin").first.click()
    expect(page).to_have_url(f"{proxy.url}/admin/application_settings")
    upstream_host = proxy.env["DPROXY_UPSTREAM_URL"].removeprefix("http://")
    expect(page.get_by_role("row").filter(has_text=upstream_host)).to_be_visible()

    page.get_by_label("Token lifetime").fill("30")
    page.locator("form:has(#token-delay)").get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text("Registry token lifetime saved")
    settings = proxy.api("GET", "/application/settings")
    assert isinstance(settings, dict) and settings["container_registry_token_expire_delay"] == 30

    switch = page.get_by_role("switch", name="Enable the Dependency Proxy")
    try:
        switch.uncheck()
        page.locator("form:has(#instance-enabled)").get_by_role(
            "button", name="Save changes"
        ).click()
        expect(page.get_by_role("status")).to_contain_text("disabled on this instance")
        _shot(page, screenshots, "08-admin-settings")
        assert not _pull(proxy, group, tmp_path / "off")
        page.get_by_role("switch", name="Enable the Dependency Proxy").check()
        page.locator("form:has(#instance-enabled)").get_by_role(
            "button", name="Save changes"
        ).click()
        expect(page.get_by_role("status")).to_contain_text("enabled on this instance")
        assert _pull(proxy, group, tmp_path / "on")
    finally:
        proxy.api("PUT", "/application/settings", {"dependency_proxy_enabled": True})


def test_personal_access_token_is_created_shown_once_pulls_and_is_revoked(
    page: Page, proxy: DproxyServer, tmp_path: Path, screenshots: Path
) -> None:
    group = _group(proxy, 10)
    _sign_in(page, *USER)
    page.get_by_role("link", name="Access tokens").first.click()
    expect(page).to_have_url(f"{proxy.url}/-/user_settings/personal_access_tokens")

    # No scope chosen: refused, with the name kept.
    page.get_by_label("Token name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_text("Select at least one scope.")).to_be_visible()
    expect(page.get_by_label("Token name")).to_have_value("laptop")

    page.get_by_label("read_registry").check()
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_role("textbox", name="New personal access token").input_value()
    assert secret.startswith("glpat-")
    expect(page.get_by_role("row").filter(has_text="laptop")).to_contain_text("Active")
    _shot(page, screenshots, "09-personal-access-tokens")

    assert _pull(proxy, group, tmp_path / "with-token", creds=(USER[0], secret))
    page.reload()  # the value is shown once only, and reloading creates no second token
    expect(page.get_by_role("textbox", name="New personal access token")).to_have_count(0)
    expect(page.get_by_role("row").filter(has_text="laptop")).to_have_count(1)
    assert secret not in page.content()

    page.get_by_role("button", name="Revoke laptop").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("Revoked the token")
    expect(page.get_by_role("row").filter(has_text="laptop")).to_contain_text("Revoked")
    assert not _pull(proxy, group, tmp_path / "revoked", creds=(USER[0], secret))
