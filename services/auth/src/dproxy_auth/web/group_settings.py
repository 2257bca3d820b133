"""Group > Settings > Packages and registries (Owner only): the proxy switch, the TTL
cleanup policy and the group's upstream credentials.

Each section is a form of its own, posted to the page's URL with `section` naming it. The
rules are the API's: the TTL policy is validated by the API's own schema, and credentials go
through `group_proxy`, so identity and secret are still set or cleared together, and the
secret is still stored encrypted and never shown again.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from dproxy_auth import group_proxy, service
from dproxy_auth.deps import RuntimeDep, SessionDep
from dproxy_auth.routes.api.dependency_proxy import ProxySettingsUpdate
from dproxy_auth.routes.api.dependency_proxy_cache import TtlPolicyUpdate
from dproxy_auth.web import rendering
from dproxy_auth.web.dependency_proxy import group_context
from dproxy_auth.web.deps import OwnedGroupPageDep, ViewerDep
from dproxy_auth.web.routing import PageError, web_session
from dproxy_auth.web.routing import page_router as _page_router
from dproxy_shared.repositories import groups, lifecycle

router = _page_router()

SECTIONS = ("proxy", "ttl", "credentials", "clear_credentials")


def settings_path(full_path: str) -> str:
    return f"/groups/{full_path}/-/settings/packages_and_registries"


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def checked(form: FormData, name: str) -> bool:
    return text(form, name) in ("1", "on", "true")


async def _page(
    request: Request,
    viewer: ViewerDep,
    target: OwnedGroupPageDep,
    session: SessionDep,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    group = target.group
    assert group.id is not None
    setting = await groups.proxy_setting(session, group.id)
    context = await group_context(request, viewer, session, target, "settings")
    context.update(
        setting=setting,
        has_secret=setting.secret_encrypted is not None,
        policy=await lifecycle.ttl_policy(session, group.id),
        errors=errors or {},
        values=values or {},
    )
    return rendering.render("group_settings.html", context, status_code=status_code)


@router.get("/groups/{full_path:path}/-/settings/packages_and_registries")
async def settings_page(
    request: Request, viewer: ViewerDep, target: OwnedGroupPageDep, session: SessionDep
) -> Response:
    return await _page(request, viewer, target, session)


@router.post("/groups/{full_path:path}/-/settings/packages_and_registries")
async def save_settings(
    request: Request,
    viewer: ViewerDep,
    target: OwnedGroupPageDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await request.form()  # parsed once already, for the CSRF check
    section = text(form, "section")
    group = target.group
    assert group.id is not None
    web = web_session(request)
    if section == "proxy":
        enabled = checked(form, "enabled")
        await groups.set_proxy_enabled(session, group.id, enabled)
        web.set_flash(
            "success", f"Dependency Proxy {'enabled' if enabled else 'disabled'} for this group."
        )
    elif section == "ttl":
        try:
            update = TtlPolicyUpdate.model_validate(
                {"enabled": checked(form, "enabled"), "ttl": text(form, "ttl")}
            )
        except ValidationError:
            return await _page(
                request,
                viewer,
                target,
                session,
                errors={"ttl": "Enter a whole number of days from 1 to 3650."},
                values={"ttl": text(form, "ttl")[:16]},
                status_code=400,
            )
        assert update.enabled is not None and update.ttl is not None
        await lifecycle.set_ttl_policy(session, group.id, enabled=update.enabled, ttl=update.ttl)
        web.set_flash("success", "Cleanup policy saved.")
    elif section in ("credentials", "clear_credentials"):
        identity = text(form, "identity") if section == "credentials" else ""
        secret = text(form, "secret") if section == "credentials" else ""
        try:
            ProxySettingsUpdate.model_validate({"identity": identity, "secret": secret})
        except ValidationError as exc:
            raise PageError(400, "The username or the secret is too long.") from exc
        try:
            await group_proxy.set_upstream_credentials(
                session, settings=runtime.settings, group=group, identity=identity, secret=secret
            )
        except service.ValidationFailed:
            return await _page(
                request,
                viewer,
                target,
                session,
                errors={"credentials": "Enter both the username and the password or token."},
                values={"identity": identity},
                status_code=400,
            )
        web.set_flash(
            "success",
            "Upstream credentials saved." if identity else "Upstream credentials removed.",
        )
    else:
        raise PageError(400, "Unknown settings section.")
    return RedirectResponse(settings_path(group.full_path), status_code=303)
