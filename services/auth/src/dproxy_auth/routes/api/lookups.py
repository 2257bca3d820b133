"""Path parameters resolved to rows, with GitLab's answers: 404 for what does not exist or
may not be seen (so private names do not leak), 403 for what is seen but not allowed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, Path
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth.deps import CallerDep, SessionDep
from dproxy_auth.errors import ApiError
from dproxy_auth.routes.api.schemas import MAX_ID
from dproxy_shared import access
from dproxy_shared.models import AccessLevel, Group, User
from dproxy_shared.repositories import groups, users

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
GroupRef = Annotated[
    str,
    Path(
        max_length=3072,
        description="The group's numeric id, or its full path URL-encoded (`top%2Fsub`)",
    ),
]
_NUMERIC = re.compile(r"[0-9]{1,10}")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"404 {what} Not Found")


FORBIDDEN = "403 Forbidden"


async def find_group(session: AsyncSession, ref: str) -> Group | None:
    """By id or by full path; `ref` as routed (`%2F` and `%25` still encoded)."""
    ref = unquote(ref)
    if _NUMERIC.fullmatch(ref):
        group_id = int(ref)
        return await groups.get(session, group_id) if group_id <= MAX_ID else None
    return await groups.get_by_full_path(session, ref)


@dataclass(frozen=True, slots=True)
class GroupAccess:
    group: Group
    level: int  # the caller's effective access level on it


async def _group_access(group_id: GroupRef, session: SessionDep, caller: CallerDep) -> GroupAccess:
    group = await find_group(session, group_id)
    level = await access.access_level(session, caller.actor, group) if group else 0
    if group is None or level < AccessLevel.GUEST:
        raise not_found("Group")
    return GroupAccess(group, level)


async def _readable_group(target: Annotated[GroupAccess, Depends(_group_access)]) -> Group:
    return target.group


async def _owned_group(target: Annotated[GroupAccess, Depends(_group_access)]) -> Group:
    """Owner (or admin): manage members and the group's tokens, change or delete it."""
    if target.level < AccessLevel.OWNER:
        raise ApiError(403, FORBIDDEN)
    return target.group


ReadableGroup = Annotated[Group, Depends(_readable_group)]
OwnedGroup = Annotated[Group, Depends(_owned_group)]


async def _path_user(user_id: IdPath, session: SessionDep) -> User:
    user = await users.get(session, user_id)
    if user is None:
        raise not_found("User")
    return user


PathUser = Annotated[User, Depends(_path_user)]
