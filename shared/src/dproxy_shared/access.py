"""Who a credential stands for, whether it is still valid, and what it may do on a group.

The auth service uses this when it issues a registry token; the registry uses it again (with a
short cache) on every request, so a token revoked, expired or blocked after a JWT was issued
stops working within seconds. One copy of the rules for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.models import (
    AccessLevel,
    CiJobToken,
    DeployToken,
    Group,
    PersonalAccessToken,
    User,
    utcnow,
)
from dproxy_shared.repositories import groups, tokens, users

ActorKind = Literal["user", "personal_access_token", "deploy_token", "job_token"]

# GitLab's rule is `api`, or read_registry together with write_registry; dproxy also accepts
# read_registry alone for pulls (documented in the README).
REGISTRY_PULL_SCOPES = frozenset({"api", "read_registry"})


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    id: int  # of the credential (of the user for kind "user")
    user: User | None = None  # whose permissions apply; None for deploy tokens
    deploy_token: DeployToken | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def subject(self) -> str:
        """The JWT `sub`: names the credential, never carries a secret."""
        return f"{self.kind}:{self.id}"

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.admin

    def may_use_registry(self) -> bool:
        if self.kind in ("user", "job_token"):
            return True
        if self.kind == "deploy_token":
            return "read_registry" in self.scopes
        return bool(self.scopes & REGISTRY_PULL_SCOPES)


def user_is_active(user: User | None) -> bool:
    return user is not None and user.state == "active"


def personal_access_token_is_valid(token: PersonalAccessToken) -> bool:
    return not token.revoked and (token.expires_at is None or token.expires_at > date.today())


def deploy_token_is_valid(token: DeployToken) -> bool:
    return not token.revoked and (token.expires_at is None or token.expires_at > utcnow())


def job_token_is_valid(token: CiJobToken) -> bool:
    return token.finished_at is None and token.expires_at > utcnow()


def for_user(user: User) -> Actor | None:
    if not user_is_active(user) or user.id is None:
        return None
    return Actor("user", user.id, user=user)


async def for_personal_access_token(
    session: AsyncSession, token: PersonalAccessToken
) -> Actor | None:
    if not personal_access_token_is_valid(token) or token.id is None:
        return None
    user = await users.get(session, token.user_id)
    if not user_is_active(user):
        return None
    return Actor("personal_access_token", token.id, user=user, scopes=frozenset(token.scope_list))


def for_deploy_token(token: DeployToken) -> Actor | None:
    if not deploy_token_is_valid(token) or token.id is None:
        return None
    return Actor("deploy_token", token.id, deploy_token=token, scopes=frozenset(token.scope_list))


async def for_job_token(session: AsyncSession, token: CiJobToken) -> Actor | None:
    if not job_token_is_valid(token) or token.id is None:
        return None
    user = await users.get(session, token.user_id)
    if not user_is_active(user):
        return None
    return Actor("job_token", token.id, user=user)


async def from_subject(session: AsyncSession, subject: str) -> Actor | None:
    """The actor a JWT names, if its credential is still valid right now."""
    kind, _, raw_id = subject.partition(":")
    if not raw_id.isdigit():
        return None
    credential_id = int(raw_id)
    if kind == "user":
        user = await users.get(session, credential_id)
        return for_user(user) if user else None
    if kind == "personal_access_token":
        pat = await tokens.get_personal_access_token(session, credential_id)
        return await for_personal_access_token(session, pat) if pat else None
    if kind == "deploy_token":
        deploy = await tokens.get_deploy_token(session, credential_id)
        return for_deploy_token(deploy) if deploy else None
    if kind == "job_token":
        job = await tokens.get_job_token(session, credential_id)
        return await for_job_token(session, job) if job else None
    return None


async def access_level(session: AsyncSession, actor: Actor | None, group: Group) -> int:
    """The actor's effective role on the group: the highest membership on it or an ancestor.

    Admins count as Owner everywhere. Deploy tokens have no role (they can only pull).
    """
    if actor is None or actor.user is None or actor.user.id is None:
        return AccessLevel.NO_ACCESS
    if actor.user.admin:
        return AccessLevel.OWNER
    return await groups.effective_access_level(session, user_id=actor.user.id, group=group)


async def can_pull(session: AsyncSession, actor: Actor | None, group: Group) -> bool:
    """Guest on the group or an ancestor, or a deploy token of the group or an ancestor."""
    if actor is None or not actor.may_use_registry():
        return False
    if actor.deploy_token is not None:
        return actor.deploy_token.group_id in await groups.ancestor_ids(session, group)
    return await access_level(session, actor, group) >= AccessLevel.GUEST


async def is_owner(session: AsyncSession, actor: Actor | None, group: Group) -> bool:
    """Owner (or admin): change proxy settings, purge, manage members and group tokens."""
    return await access_level(session, actor, group) >= AccessLevel.OWNER
