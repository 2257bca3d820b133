"""A group's dependency proxy: its settings and the purge of its cache (Owner to change)."""

from __future__ import annotations

from pydantic import BaseModel

from dproxy_auth.deps import SessionDep
from dproxy_auth.errors import ApiError
from dproxy_auth.routes.api._routing import errors_described, resource_router
from dproxy_auth.routes.api.lookups import OwnedGroup, ReadableGroup
from dproxy_auth.routes.api.schemas import Accepted
from dproxy_shared.repositories import cache, groups

router = resource_router("dependency proxy")


class ProxySettings(BaseModel):
    enabled: bool


@router.get("/groups/{group_id}/dependency_proxy/settings", summary="Proxy settings")
async def get_settings(group: ReadableGroup, session: SessionDep) -> ProxySettings:
    assert group.id is not None
    return ProxySettings(enabled=await groups.proxy_enabled(session, group.id))


@router.put("/groups/{group_id}/dependency_proxy/settings", summary="Change proxy settings")
async def put_settings(
    group: OwnedGroup, body: ProxySettings, session: SessionDep
) -> ProxySettings:
    assert group.id is not None
    await groups.set_proxy_enabled(session, group.id, body.enabled)
    return body


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
