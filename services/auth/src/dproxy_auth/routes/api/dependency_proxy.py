"""A group's dependency proxy: its settings and the purge of its cache (Owner to change).

The settings carry the group's upstream credentials: `identity` is shown, `secret` is
write-only (stored Fernet-encrypted, never returned). Both are set together, or cleared
together with `null`; a PUT without either leaves them as they are.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from dproxy_auth.deps import RuntimeDep, SessionDep
from dproxy_auth.errors import ApiError
from dproxy_auth.routes.api._routing import errors_described, resource_router
from dproxy_auth.routes.api.lookups import OwnedGroup, ReadableGroup
from dproxy_auth.routes.api.schemas import Accepted
from dproxy_shared.crypto import SecretBox
from dproxy_shared.repositories import cache, groups

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
        if credentials != {"identity", "secret"} or bool(body.identity) != bool(body.secret):
            raise ApiError(400, "identity and secret are set (or cleared) together")
        secret = SecretBox(runtime.settings).encrypt(body.secret) if body.secret else None
        await groups.set_upstream_credentials(session, group.id, body.identity or None, secret)
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
    assert group.id is not None
    if await cache.purge_in_progress(session, group.id):
        raise ApiError(409, "409 Conflict: a purge of this group's cache is already running")
    await cache.mark_group_for_destruction(session, group.id)
    return Accepted()
