"""Instance settings (admin): the subset of GitLab's application settings dproxy uses."""

from __future__ import annotations

from dproxy_auth import service
from dproxy_auth.deps import AdminDep, SessionDep
from dproxy_auth.routes.api._routing import resource_router
from dproxy_auth.routes.api.schemas import ApplicationSettingsOut, ApplicationSettingsUpdate
from dproxy_shared.repositories import groups

router = resource_router("application settings")


@router.get("/application/settings", summary="Instance settings (admin)")
async def get_settings(_admin: AdminDep, session: SessionDep) -> ApplicationSettingsOut:
    return ApplicationSettingsOut.of(await groups.application_settings(session))


@router.put("/application/settings", summary="Change instance settings (admin)")
async def update_settings(
    _admin: AdminDep, body: ApplicationSettingsUpdate, session: SessionDep
) -> ApplicationSettingsOut:
    setting = await service.update_application_settings(
        session,
        container_registry_token_expire_delay=body.container_registry_token_expire_delay,
        dependency_proxy_enabled=body.dependency_proxy_enabled,
    )
    return ApplicationSettingsOut.of(setting)
