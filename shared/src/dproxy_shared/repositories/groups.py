from __future__ import annotations

from datetime import date

from sqlalchemy import func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.models import (
    AccessLevel,
    ApplicationSetting,
    DependencyProxyGroupSetting,
    Group,
    GroupMember,
)


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
