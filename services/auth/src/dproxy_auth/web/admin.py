"""Admin > Settings (`/admin/application_settings`): the instance switch, the registry token
lifetime, and each upstream's rate-limit budget as the fetchers last saw it.

Changes go through `service.update_application_settings` after the API's own schema has
validated them; the budget comes from the same shared cache as `GET /dependency_proxy/upstreams`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import service
from dproxy_auth.deps import RuntimeDep, SessionDep
from dproxy_auth.routes.api.schemas import ApplicationSettingsUpdate
from dproxy_auth.web import rendering
from dproxy_auth.web.deps import AdminViewerDep, Viewer, page_context
from dproxy_auth.web.group_settings import checked, text
from dproxy_auth.web.routing import PageError, page_router, web_session
from dproxy_shared import ratelimit
from dproxy_shared.ratelimit import RateLimitState
from dproxy_shared.repositories import groups
from dproxy_shared.runtime import Runtime

router = page_router()

PATH = "/admin/application_settings"


@dataclass(frozen=True, slots=True)
class UpstreamBudget:
    url: str
    host: str
    state: RateLimitState | None
    low_for: float | None  # seconds cached tags are still served without revalidation

    @property
    def observed_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.state.observed_at, UTC) if self.state else None


async def _page(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    runtime: Runtime,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    url = runtime.settings.upstream_url
    host = urlsplit(url).netloc
    state, low_for = await ratelimit.snapshot(runtime.coordination.cache, host)
    context = page_context(
        request,
        viewer,
        nav="admin",
        setting=await groups.application_settings(session),
        upstreams=[UpstreamBudget(url, host, state, low_for)],
        reserve=runtime.settings.ratelimit_reserve,
        errors=errors or {},
        values=values or {},
    )
    return rendering.render("admin_settings.html", context, status_code=status_code)


@router.get(PATH)
async def settings_page(
    request: Request, viewer: AdminViewerDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    return await _page(request, viewer, session, runtime)


@router.post(PATH)
async def save_settings(
    request: Request, viewer: AdminViewerDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await request.form()
    section = text(form, "section")
    web = web_session(request)
    if section == "dependency_proxy":
        enabled = checked(form, "enabled")
        await service.update_application_settings(session, dependency_proxy_enabled=enabled)
        web.set_flash(
            "success", f"Dependency Proxy {'enabled' if enabled else 'disabled'} on this instance."
        )
    elif section == "registry_token":
        raw = text(form, "container_registry_token_expire_delay")
        try:
            update = ApplicationSettingsUpdate.model_validate(
                {"container_registry_token_expire_delay": raw}
            )
        except ValidationError:
            return await _page(
                request,
                viewer,
                session,
                runtime,
                errors={"delay": "Enter a whole number of minutes from 1 to 525600."},
                values={"delay": raw[:16]},
                status_code=400,
            )
        await service.update_application_settings(
            session,
            container_registry_token_expire_delay=update.container_registry_token_expire_delay,
        )
        web.set_flash("success", "Registry token lifetime saved.")
    else:
        raise PageError(400, "Unknown settings section.")
    return RedirectResponse(PATH, status_code=303)
