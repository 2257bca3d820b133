"""Who may do what on a group (GitLab's Dependency Proxy policy)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth.actors import Actor
from dproxy_shared.models import AccessLevel, Group
from dproxy_shared.repositories import groups


async def can_pull(session: AsyncSession, actor: Actor | None, group: Group) -> bool:
    """Pulling needs Guest on the group or an ancestor; admins may pull anything."""
    if actor is None:
        return False
    if actor.user.admin:
        return True
    assert actor.user.id is not None
    level = await groups.effective_access_level(session, user_id=actor.user.id, group=group)
    return level >= AccessLevel.GUEST
