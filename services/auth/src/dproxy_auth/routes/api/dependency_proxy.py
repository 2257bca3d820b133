"""A group's dependency proxy: its settings and the purge of its cache (Owner to change).

The settings carry the group's upstream credentials: `identity` is shown, `secret` is
write-only (stored Fernet-encrypted, never returned). Both are set together, or cleared
together with `null`; a PUT without either leaves them as they are.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from dproxy_auth import group_proxy
from dproxy_auth.deps import RuntimeDep, SessionDep
from dproxy_auth.errors import ApiError
from dproxy_auth.routes.api._routing import errors_described, resource_router
from dproxy_auth.routes.api.lookups import OwnedGroup, ReadableGroup
from dproxy_auth.routes.api.schemas import Accepted
from dproxy_shared.repositories import groups

router = resource_router("dependency proxy")


class ProxySettings(BaseModel):
    enabled: bool
    identity: str | None = Field(description="Upstream username for this group's pulls")


class ProxySettingsUpdate(BaseModel):
    enabled: bool | None = None
    identity: str | None = Field(None, max_length=255, description="Upstream username")
    secret: str | None = Field(
        None, max_length=4096, description="Upstream password or token (write-only)"
    )


async def _settings(session: SessionDep, group_id: int) -> ProxySettings:
    setting = await groups.proxy_setting(session, group_id)
    return ProxySettings(enabled=setting.enabled, identity=setting.identity)


@router.get("/groups/{group_id}/dependency_proxy/settings", summary="Proxy settings")
async def get_settings(group: ReadableGroup, session: SessionDep) -> ProxySettings:
    assert group.id is not None
    return await _settings(session, group.id)


@router.put(
    "/groups/{group_id}/dependency_proxy/settings",
    responses=errors_described((400, "identity without secret, or secret without identity")),
    summary="Change proxy settings",
)
async def put_settings(
    group: OwnedGroup, body: ProxySettingsUpdate, session: SessionDep, runtime: RuntimeDep
) -> ProxySettings:
    assert group.id is not None
    credentials = {"identity", "secret"} & body.model_fields_set
    if credentials:
        if credentials != {"identity", "secret"}:
            raise ApiError(400, group_proxy.CREDENTIALS_TOGETHER)
        await group_proxy.set_upstream_credentials(
            session,
            settings=runtime.settings,
            group=group,
            identity=body.identity,
            secret=body.secret,
        )
    if body.enabled is not None:
        await groups.set_proxy_enabled(session, group.id, body.enabled)
    return await _settings(session, group.id)


@router.delete(
    "/groups/{group_id}/dependency_proxy/cache",
    status_code=202,
    responses=errors_described((409, "A purge of this cache is still running")),
    summary="Purge the group's cache",
)
async def purge(group: OwnedGroup, session: SessionDep) -> Accepted:
    """Marks every cached manifest and blob of the group for destruction (GitLab: 202)."""
    await group_proxy.purge_cache(session, group=group)
    return Accepted()
