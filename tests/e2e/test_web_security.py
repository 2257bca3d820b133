"""The pages' session and form protections, over plain HTTP (no browser needed): CSRF, the
cookie's flags, sign-in redirects, 404s for pages a user may not see, the shared brute-force
ban, and sessions across processes in the split topology (the cookie is all there is)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.conftest import GROUP, USER, start_dproxy
from tests.support import UpstreamRegistry
from tests.support.dproxy import DproxyServer

pytestmark = pytest.mark.e2e

TOPOLOGIES = ("embedded", "split")
COOKIE = "_dproxy_session"
TOKEN_FIELD = re.compile(r'name="authenticity_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def proxy(module_dproxy: DproxyServer) -> DproxyServer:
    return module_dproxy


def _base(proxy: DproxyServer) -> str:
    """Pages are served by the auth service (its own port in the split topology)."""
    return proxy.auth_url or proxy.url


def _client(proxy: DproxyServer) -> httpx.Client:
    return httpx.Client(base_url=_base(proxy), timeout=30, follow_redirects=False)


def _csrf(response: httpx.Response) -> str:
    found = TOKEN_FIELD.search(response.text)
    assert found, response.text[:500]
    return found.group(1)


@contextlib.contextmanager
def _signed_in(proxy: DproxyServer, username: str, password: str) -> Iterator[httpx.Client]:
    with _client(proxy) as client:
        form = client.get("/users/sign_in")
        response = client.post(
            "/users/sign_in",
            data={"username": username, "password": password, "authenticity_token": _csrf(form)},
        )
        assert response.status_code == 303, response.text[:500]
        yield client


def _set_cookie(response: httpx.Response) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookie.load(header)
    return cookie


def test_signed_out_visitors_are_sent_to_sign_in(proxy: DproxyServer) -> None:
    with _client(proxy) as client:
        for path in (
            "/",
            f"/groups/{GROUP}/-/dependency_proxy",
            f"/groups/{GROUP}/-/settings/packages_and_registries",
            "/admin/application_settings",
            "/-/user_settings/personal_access_tokens",
        ):
            response = client.get(path)
            assert response.status_code == 302, path
            assert response.headers["location"].startswith("/users/sign_in"), path
        page = client.get("/users/sign_in")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_the_session_cookie_is_http_only_and_same_site(proxy: DproxyServer) -> None:
    with _client(proxy) as client:
        cookie = _set_cookie(client.get("/users/sign_in"))[COOKIE]
        assert cookie["httponly"] is True
        assert cookie["samesite"].lower() == "lax"
        assert cookie["path"] == "/"
        assert not cookie["secure"]  # plain-HTTP external URL: the browser must send it back


def test_forms_without_the_csrf_token_are_refused(proxy: DproxyServer) -> None:
    with _client(proxy) as client:
        client.get("/users/sign_in")  # a session cookie, but no token in the form
        response = client.post("/users/sign_in", data={"username": USER[0], "password": USER[1]})
        assert response.status_code == 403
        assert "text/html" in response.headers["content-type"]
    with _signed_in(proxy, "root", proxy.env["DPROXY_ROOT_PASSWORD"]) as client:
        page = client.get("/admin/application_settings")
        token = _csrf(page)
        for data in (
            {"section": "dependency_proxy"},  # would turn the instance off
            {"section": "dependency_proxy", "authenticity_token": "not-" + token},
        ):
            response = client.post("/admin/application_settings", data=data)
            assert response.status_code == 403, data
        settings = proxy.api("GET", "/application/settings")
        assert isinstance(settings, dict) and settings["dependency_proxy_enabled"] is True
        # A token from another session does not work either.
        with _client(proxy) as stranger:
            foreign = _csrf(stranger.get("/users/sign_in"))
        response = client.post(
            "/admin/application_settings",
            data={"section": "dependency_proxy", "authenticity_token": foreign},
        )
        assert response.status_code == 403


def test_sign_in_rotates_the_session_and_sign_out_revokes_the_old_cookie(
    proxy: DproxyServer,
) -> None:
    with _client(proxy) as client:
        form = client.get("/users/sign_in")
        before = client.cookies[COOKIE]
        response = client.post(
            "/users/sign_in",
            data={"username": USER[0], "password": USER[1], "authenticity_token": _csrf(form)},
        )
        assert response.status_code == 303 and response.headers["location"] == "/"
        signed_in = client.cookies[COOKIE]
        assert signed_in != before
        assert client.get("/").status_code == 200
        page = client.get("/")
        client.post("/users/sign_out", data={"authenticity_token": _csrf(page)})
        assert client.get("/").status_code == 302
    # Replaying the signed-in cookie after sign-out: refused (in split mode, through Redis).
    with _client(proxy) as replay:
        replay.cookies.set(COOKIE, signed_in)
        assert replay.get("/").status_code == 302
        # And a forged one never works.
        replay.cookies.set(COOKIE, signed_in[:-4] + "AAAA")
        assert replay.get("/").status_code == 302


def test_guests_get_404_on_owner_and_admin_pages(proxy: DproxyServer) -> None:
    with _signed_in(proxy, *USER) as client:
        assert client.get(f"/groups/{GROUP}/-/dependency_proxy").status_code == 200
        assert "Clear cache" not in client.get(f"/groups/{GROUP}/-/dependency_proxy").text
        for path in (
            f"/groups/{GROUP}/-/settings/packages_and_registries",
            "/admin/application_settings",
            "/groups/does-not-exist/-/dependency_proxy",
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "text/html" in response.headers["content-type"]
        token = _csrf(client.get("/"))
        response = client.post(
            f"/groups/{GROUP}/-/settings/packages_and_registries",
            data={"section": "proxy", "authenticity_token": token},
        )
        assert response.status_code == 404
        settings = proxy.api("GET", f"/groups/{proxy.group_ids[GROUP]}/dependency_proxy/settings")
        assert isinstance(settings, dict) and settings["enabled"] is True


def test_the_api_and_registry_keep_their_json_errors(proxy: DproxyServer) -> None:
    with _client(proxy) as client:
        assert client.get("/api/v4/user").json() == {"message": "401 Unauthorized"}
        response = client.get("/api/v4/no-such-thing", headers={"PRIVATE-TOKEN": proxy.root_token})
        assert response.json() == {"message": "404 Not Found"}
    registry = httpx.get(f"{proxy.url}/v2/", timeout=30)
    assert registry.status_code == 401 and registry.json()["errors"][0]["code"] == "UNAUTHORIZED"


# -- an https external URL, and a low brute-force limit (a dproxy of their own) -----------


@pytest.fixture(scope="module")
def https_proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamRegistry
) -> Iterator[DproxyServer]:
    """Behind a TLS-terminating proxy: clients see https, dproxy itself speaks HTTP."""
    env = {"DPROXY_EXTERNAL_URL": "https://dproxy.example.test", "DPROXY_AUTH_FAILURE_LIMIT": "3"}
    server = start_dproxy(tmp_path_factory.mktemp("web-https"), upstream.url, env=env)
    yield server
    server.stop()


def test_the_cookie_is_secure_behind_https(https_proxy: DproxyServer) -> None:
    cookie = _set_cookie(httpx.get(f"{https_proxy.url}/users/sign_in", timeout=30))[COOKIE]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True


def test_failed_sign_ins_share_the_ban_with_registry_logins(https_proxy: DproxyServer) -> None:
    with _client(https_proxy) as client:
        form = client.get("/users/sign_in")
        token = _csrf(form)
        # The cookie is Secure and this is plain HTTP (as between a TLS proxy and dproxy):
        # hand it back as the proxy would.
        session = _set_cookie(form)[COOKIE].value
        client.cookies.clear()
        client.headers["Cookie"] = f"{COOKIE}={session}"
        statuses = [
            client.post(
                "/users/sign_in",
                data={"username": USER[0], "password": "wrong", "authenticity_token": token},
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        # Banned now, even with the right password, and on /jwt/auth too.
        response = client.post(
            "/users/sign_in",
            data={"username": USER[0], "password": USER[1], "authenticity_token": token},
        )
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert "Too many failed sign-in attempts" in response.text
        jwt = client.get("/jwt/auth", params={"service": "dependency_proxy"}, auth=USER)
        assert jwt.status_code == 429
