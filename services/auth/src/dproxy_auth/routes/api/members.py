"""Group members (GitLab's Members API). Guests may look; Owners change."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from dproxy_auth import service
from dproxy_auth.deps import SessionDep
from dproxy_auth.routes.api._routing import CONFLICT, resource_router
from dproxy_auth.routes.api.lookups import IdPath, OwnedGroup, ReadableGroup, not_found
from dproxy_auth.routes.api.pagination import PaginationDep
from dproxy_auth.routes.api.schemas import MemberCreate, MemberOut, MemberUpdate
from dproxy_shared.models import Group, GroupMember, User
from dproxy_shared.repositories import groups, users

router = resource_router("members")


@router.get("/groups/{group_id}/members", summary="Direct members")
async def list_members(
    group: ReadableGroup, session: SessionDep, pages: PaginationDep
) -> list[MemberOut]:
    assert group.id is not None
    found, total = await groups.members_page(session, group_id=group.id, window=pages.window)
    pages.publish(total)
    return [MemberOut.of(member, user) for member, user in found]


@router.get(
    "/groups/{group_id}/members/all",
    summary="Direct and inherited members, each at their highest level",
)
async def list_all_members(
    group: ReadableGroup, session: SessionDep, pages: PaginationDep
) -> list[MemberOut]:
    everyone = await service.effective_members(session, group=group)
    return [MemberOut.of(found.membership, found.user) for found in pages.slice(everyone)]


@router.get("/groups/{group_id}/members/all/{user_id}", summary="One effective member")
async def get_effective_member(
    group: ReadableGroup, user_id: IdPath, session: SessionDep
) -> MemberOut:
    for found in await service.effective_members(session, group=group):
        if found.user.id == user_id:
            return MemberOut.of(found.membership, found.user)
    raise not_found("Member")


async def _find_member(group: Group, user_id: int, session: SessionDep) -> tuple[GroupMember, User]:
    assert group.id is not None
    member = await groups.get_member(session, group_id=group.id, user_id=user_id)
    user = await users.get(session, user_id) if member else None
    if member is None or user is None:
        raise not_found("Member")
    return member, user


async def _readable_member(
    group: ReadableGroup, user_id: IdPath, session: SessionDep
) -> tuple[GroupMember, User]:
    return await _find_member(group, user_id, session)


async def _owned_member(
    group: OwnedGroup, user_id: IdPath, session: SessionDep
) -> tuple[GroupMember, User]:
    return await _find_member(group, user_id, session)


ReadableMember = Annotated[tuple[GroupMember, User], Depends(_readable_member)]
OwnedMember = Annotated[tuple[GroupMember, User], Depends(_owned_member)]


@router.get("/groups/{group_id}/members/{user_id}", summary="One direct member")
async def get_member(found: ReadableMember) -> MemberOut:
    return MemberOut.of(*found)


@router.post(
    "/groups/{group_id}/members",
    status_code=201,
    responses=CONFLICT,
    summary="Add a member (Owner)",
)
async def add_member(group: OwnedGroup, body: MemberCreate, session: SessionDep) -> MemberOut:
    user = await users.get(session, body.user_id)
    if user is None:
        raise not_found("User")
    member = await service.add_member(
        session,
        group=group,
        user=user,
        access_level=body.access_level,
        expires_at=body.expires_at,
        replace=False,
    )
    return MemberOut.of(member, user)


@router.put("/groups/{group_id}/members/{user_id}", summary="Change a member (Owner)")
async def update_member(found: OwnedMember, body: MemberUpdate, session: SessionDep) -> MemberOut:
    member, user = found
    # An omitted expires_at keeps the current one; an explicit null clears it.
    expires_at = body.expires_at if "expires_at" in body.model_fields_set else member.expires_at
    await service.update_member(
        session, member=member, access_level=body.access_level, expires_at=expires_at
    )
    return MemberOut.of(member, user)


@router.delete(
    "/groups/{group_id}/members/{user_id}", status_code=204, summary="Remove a member (Owner)"
)
async def remove_member(found: OwnedMember, session: SessionDep) -> None:
    await groups.remove_member(session, found[0])
