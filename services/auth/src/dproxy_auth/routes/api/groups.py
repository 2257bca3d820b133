"""Groups (GitLab's Groups API). Everything is private: a caller sees the groups they are a
member of and everything below them; admins see all."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import service
from dproxy_auth.deps import Caller, CallerDep, SessionDep
from dproxy_auth.errors import ApiError
from dproxy_auth.routes.api._routing import CONFLICT, resource_router
from dproxy_auth.routes.api.lookups import FORBIDDEN, OwnedGroup, ReadableGroup, not_found
from dproxy_auth.routes.api.pagination import Pagination, PaginationDep
from dproxy_auth.routes.api.schemas import Accepted, GroupCreate, GroupOut, GroupUpdate
from dproxy_shared import access
from dproxy_shared.models import AccessLevel, Group
from dproxy_shared.repositories import groups

router = resource_router("groups")


async def _list(
    session: AsyncSession,
    caller: Caller,
    pages: Pagination,
    *,
    parent_id: int | None = None,
    top_level_only: bool = False,
    search: str | None = None,
) -> list[GroupOut]:
    found, total = await groups.list_page(
        session,
        window=pages.window,
        visible_to=None if caller.admin else caller.user.id,
        parent_id=parent_id,
        top_level_only=top_level_only,
        search=search,
    )
    pages.publish(total)
    return [GroupOut.of(group) for group in found]


@router.get("/groups", summary="Groups you can see")
async def list_groups(
    caller: CallerDep,
    session: SessionDep,
    pages: PaginationDep,
    search: Annotated[str | None, Query(max_length=255)] = None,
    top_level_only: bool = False,
) -> list[GroupOut]:
    return await _list(session, caller, pages, top_level_only=top_level_only, search=search)


@router.post(
    "/groups",
    status_code=201,
    responses=CONFLICT,
    summary="Create a group (admin) or subgroup (Owner of the parent); you become its Owner",
)
async def create_group(body: GroupCreate, caller: CallerDep, session: SessionDep) -> GroupOut:
    parent: Group | None = None
    if body.parent_id is not None:
        parent = await groups.get(session, body.parent_id)
        level = await access.access_level(session, caller.actor, parent) if parent else 0
        if parent is None or level < AccessLevel.GUEST:
            raise not_found("Parent Group")
        if level < AccessLevel.OWNER:
            raise ApiError(403, FORBIDDEN)
    elif not caller.admin:
        raise ApiError(403, f"{FORBIDDEN} - only administrators create top-level groups")
    group = await service.create_group(
        session, name=body.name, path=body.path, parent=parent, creator=caller.user
    )
    return GroupOut.of(group)


@router.get("/groups/{group_id}", summary="One group")
async def get_group(group: ReadableGroup) -> GroupOut:
    return GroupOut.of(group)


@router.put("/groups/{group_id}", summary="Rename a group (Owner)")
async def update_group(group: OwnedGroup, body: GroupUpdate, session: SessionDep) -> GroupOut:
    if body.name is not None:
        await groups.rename(session, group, body.name)
    return GroupOut.of(group)


@router.delete(
    "/groups/{group_id}",
    status_code=202,
    summary="Delete a group with its subgroups, members, tokens and cache (Owner)",
)
async def delete_group(group: OwnedGroup, session: SessionDep) -> Accepted:
    await service.delete_group(session, group=group)
    return Accepted()


@router.get("/groups/{group_id}/subgroups", summary="Direct subgroups you can see")
async def list_subgroups(
    group: ReadableGroup,
    caller: CallerDep,
    session: SessionDep,
    pages: PaginationDep,
    search: Annotated[str | None, Query(max_length=255)] = None,
) -> list[GroupOut]:
    return await _list(session, caller, pages, parent_id=group.id, search=search)
