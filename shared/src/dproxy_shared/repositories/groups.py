from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.models import (
    AccessLevel,
    ApplicationSetting,
    DependencyProxyGroupSetting,
    Group,
    GroupMember,
    User,
)
from dproxy_shared.repositories._paging import Window, page


async def get(session: AsyncSession, group_id: int) -> Group | None:
    return await session.get(Group, group_id)


async def get_by_full_path(session: AsyncSession, full_path: str) -> Group | None:
    result = await session.exec(select(Group).where(Group.full_path == full_path.lower()))
    return result.first()


async def list_all(session: AsyncSession) -> list[Group]:
    return list((await session.exec(select(Group).order_by(col(Group.full_path)))).all())


async def create(
    session: AsyncSession, *, name: str, path: str, parent: Group | None = None
) -> Group:
    full_path = f"{parent.full_path}/{path}" if parent else path
    group = Group(
        name=name,
        path=path,
        full_path=full_path.lower(),
        parent_id=parent.id if parent else None,
    )
    session.add(group)
    await session.flush()
    return group


async def ancestor_ids(session: AsyncSession, group: Group) -> list[int]:
    """The group's id and its ancestors', nearest first (paths are a few levels deep)."""
    ids = [group.id] if group.id is not None else []
    parent_id = group.parent_id
    while parent_id is not None:
        ids.append(parent_id)
        parent = await session.get(Group, parent_id)
        parent_id = parent.parent_id if parent else None
    return ids


async def effective_access_level(session: AsyncSession, *, user_id: int, group: Group) -> int:
    """The highest membership the user holds on the group or any ancestor (GitLab's rule)."""
    ids = await ancestor_ids(session, group)
    today = date.today()
    result = await session.exec(
        select(func.max(GroupMember.access_level)).where(
            col(GroupMember.group_id).in_(ids),
            GroupMember.user_id == user_id,
            or_(col(GroupMember.expires_at).is_(None), col(GroupMember.expires_at) > today),
        )
    )
    return int(result.first() or AccessLevel.NO_ACCESS)


async def add_member(
    session: AsyncSession, *, group_id: int, user_id: int, access_level: int
) -> GroupMember:
    existing = (
        await session.exec(
            select(GroupMember).where(
                GroupMember.group_id == group_id, GroupMember.user_id == user_id
            )
        )
    ).first()
    member = existing or GroupMember(group_id=group_id, user_id=user_id)
    member.access_level = access_level
    session.add(member)
    await session.flush()
    return member


async def proxy_enabled(session: AsyncSession, group_id: int) -> bool:
    setting = await session.get(DependencyProxyGroupSetting, group_id)
    return setting is None or setting.enabled


async def set_proxy_enabled(session: AsyncSession, group_id: int, enabled: bool) -> None:
    setting = await session.get(DependencyProxyGroupSetting, group_id)
    setting = setting or DependencyProxyGroupSetting(group_id=group_id)
    setting.enabled = enabled
    session.add(setting)
    await session.flush()


async def proxy_setting(session: AsyncSession, group_id: int) -> DependencyProxyGroupSetting:
    """The group's proxy settings (defaults when it has none)."""
    setting = await session.get(DependencyProxyGroupSetting, group_id)
    return setting or DependencyProxyGroupSetting(group_id=group_id)


async def set_upstream_credentials(
    session: AsyncSession, group_id: int, identity: str | None, secret_encrypted: str | None
) -> None:
    setting = await session.get(DependencyProxyGroupSetting, group_id)
    setting = setting or DependencyProxyGroupSetting(group_id=group_id)
    setting.identity = identity
    setting.secret_encrypted = secret_encrypted
    session.add(setting)
    await session.flush()


async def application_settings(session: AsyncSession) -> ApplicationSetting:
    setting = (await session.exec(select(ApplicationSetting).limit(1))).first()
    if setting is None:
        setting = ApplicationSetting()
        session.add(setting)
        await session.flush()
    return setting


async def direct_members(session: AsyncSession, group_id: int) -> list[GroupMember]:
    result = await session.exec(
        select(GroupMember).where(GroupMember.group_id == group_id).order_by(col(GroupMember.id))
    )
    return list(result.all())


def _active_membership() -> ColumnElement[bool]:
    return or_(col(GroupMember.expires_at).is_(None), col(GroupMember.expires_at) > date.today())


def _within(path: Any, ancestor_path: Any) -> ColumnElement[bool]:
    """`path` is `ancestor_path` or below it. A prefix comparison, not LIKE: paths may hold `_`."""
    prefix = ancestor_path + "/"
    return or_(path == ancestor_path, func.substr(path, 1, func.length(prefix)) == prefix)


async def list_page(
    session: AsyncSession,
    *,
    window: Window,
    visible_to: int | None = None,
    parent_id: int | None = None,
    top_level_only: bool = False,
    search: str | None = None,
) -> tuple[list[Group], int]:
    """Groups by full path. `visible_to` (a user id) keeps those where the user is a member of
    the group or an ancestor; None means every group (admins)."""
    query = select(Group).order_by(col(Group.full_path))
    if visible_to is not None:
        ancestor = aliased(Group)
        query = query.where(
            exists().where(
                col(GroupMember.user_id) == visible_to,
                col(GroupMember.group_id) == ancestor.id,
                _active_membership(),
                _within(col(Group.full_path), ancestor.full_path),
            )
        )
    if parent_id is not None:
        query = query.where(Group.parent_id == parent_id)
    if top_level_only:
        query = query.where(col(Group.parent_id).is_(None))
    if search:
        needle = search.lower()
        query = query.where(
            or_(
                col(Group.full_path).contains(needle, autoescape=True),
                func.lower(col(Group.name)).contains(needle, autoescape=True),
            )
        )
    return await page(session, query, window)


async def subtree_ids(session: AsyncSession, group: Group) -> list[int]:
    """The group's id and those of all its descendants."""
    result = await session.exec(
        select(Group.id).where(_within(col(Group.full_path), group.full_path))
    )
    return [group_id for group_id in result.all() if group_id is not None]


async def rename(session: AsyncSession, group: Group, name: str) -> None:
    group.name = name
    session.add(group)
    await session.flush()


async def delete_group(session: AsyncSession, group: Group) -> None:
    """Delete the group; the database cascades to subgroups, members, tokens and cache rows."""
    await session.exec(delete(Group).where(col(Group.id) == group.id))


async def get_member(session: AsyncSession, *, group_id: int, user_id: int) -> GroupMember | None:
    result = await session.exec(
        select(GroupMember).where(GroupMember.group_id == group_id, GroupMember.user_id == user_id)
    )
    return result.first()


async def save_member(session: AsyncSession, member: GroupMember) -> None:
    session.add(member)
    await session.flush()


async def remove_member(session: AsyncSession, member: GroupMember) -> None:
    await session.delete(member)
    await session.flush()


async def members_page(
    session: AsyncSession, *, group_id: int, window: Window
) -> tuple[list[tuple[GroupMember, User]], int]:
    """Direct members of a group with their users, oldest membership first."""
    query = (
        select(GroupMember, User)
        .join(User, col(User.id) == GroupMember.user_id)
        .where(GroupMember.group_id == group_id)
        .order_by(col(GroupMember.id))
    )
    return await page(session, query, window)


async def active_memberships(
    session: AsyncSession, group_ids: list[int]
) -> list[tuple[GroupMember, User]]:
    """Unexpired memberships on any of these groups, with their users."""
    result = await session.exec(
        select(GroupMember, User)
        .join(User, col(User.id) == GroupMember.user_id)
        .where(col(GroupMember.group_id).in_(group_ids), _active_membership())
        .order_by(col(GroupMember.id))
    )
    return list(result.all())


async def save_application_settings(session: AsyncSession, setting: ApplicationSetting) -> None:
    session.add(setting)
    await session.flush()
