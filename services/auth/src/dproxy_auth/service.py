"""Identity operations shared by the API and the CLI (no second copy of the rules).

Functions take the session first and keyword-only arguments; they raise `ValidationFailed`,
`Conflict` or `Forbidden`, which the API turns into 400, 409 and 403.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import passwords
from dproxy_auth.tokens import (
    DEPLOY_TOKEN_SCOPES,
    JOB_TOKEN_USERNAME,
    PAT_SCOPES,
    new_deploy_token,
    new_job_token,
    new_personal_access_token,
    new_runner_token,
)
from dproxy_shared import access
from dproxy_shared.models import (
    AccessLevel,
    ApplicationSetting,
    CiJobToken,
    CiRunner,
    DeployToken,
    Group,
    GroupMember,
    PersonalAccessToken,
    User,
)
from dproxy_shared.oci.reference import PROXY_INFIX, group_segment_valid
from dproxy_shared.repositories import groups, tokens, users
from dproxy_shared.runtime import Runtime

log = logging.getLogger(__name__)

ROOT_USERNAME = "root"
# `gitlab-ci-token` is how job tokens log in; a user or deploy token of that name could not.
RESERVED_USERNAMES = frozenset({JOB_TOKEN_USERNAME})
MEMBER_ACCESS_LEVELS = frozenset(int(level) for level in AccessLevel if level)
MAX_FULL_PATH = 1024  # Group.full_path's column size
ROTATED_TOKEN_LIFETIME = timedelta(days=7)  # GitLab's default when rotating without expires_at


class ValidationFailed(Exception):
    """Input the caller must fix; the message says what."""


class Conflict(Exception):
    """The name (username, path, membership) is already taken."""


class Forbidden(Exception):
    """Allowed in general, but not this one (e.g. an admin deleting their own account)."""


@contextmanager
def _unique(message: str) -> Iterator[None]:
    """A unique index refusing a row that a concurrent request inserted after our check."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(message) from exc


# -- users ----------------------------------------------------------------------------------


async def ensure_root(runtime: Runtime) -> str | None:
    """Create the `root` admin on first start. Returns a generated password to print once."""
    configured = runtime.settings.root_password.get_secret_value()
    password = configured or secrets.token_urlsafe(18)
    try:
        async with runtime.session() as session:
            if await users.get_by_username(session, ROOT_USERNAME) is not None:
                return None
            await users.create(
                session,
                username=ROOT_USERNAME,
                name="Administrator",
                password_hash=await passwords.hash_password(password),
                admin=True,
            )
    except IntegrityError:
        return None  # another replica created it first
    return None if configured else password


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    password: str | None,
    name: str = "",
    email: str | None = None,
    admin: bool = False,
) -> User:
    if username.lower() in RESERVED_USERNAMES:
        raise ValidationFailed(f"username {username!r} is reserved")
    if await users.get_by_username(session, username) is not None:
        raise Conflict("Username has already been taken")
    if password is not None and len(password) < 8:
        raise ValidationFailed("password is too short (minimum is 8 characters)")
    password_hash = await passwords.hash_password(password) if password else None
    with _unique("Username has already been taken"):
        return await users.create(
            session,
            username=username,
            password_hash=password_hash,
            name=name,
            email=email,
            admin=admin,
        )


async def delete_user(session: AsyncSession, *, user: User, by: User) -> None:
    """Delete a user with their tokens and memberships (the database cascades)."""
    if user.id == by.id:
        raise Forbidden("You cannot delete your own account")
    await users.delete(session, user)


async def set_user_state(session: AsyncSession, *, user: User, state: str, by: User) -> None:
    """Block or unblock. A blocked user's passwords and tokens stop working at once."""
    if user.id == by.id:
        raise Forbidden("You cannot block or unblock your own account")
    await users.set_state(session, user, state)


# -- personal and group access tokens -------------------------------------------------------


def _check_token_request(scopes: list[str], allowed: frozenset[str]) -> None:
    unknown = set(scopes) - allowed
    if not scopes or unknown:
        raise ValidationFailed(
            f"scopes must be a non-empty subset of {sorted(allowed)}"
            + (f"; unknown: {sorted(unknown)}" if unknown else "")
        )


def _check_expiry(expires_at: date | None) -> None:
    if expires_at is not None and expires_at <= date.today():
        raise ValidationFailed("expires_at must be in the future")


async def create_personal_access_token(
    session: AsyncSession,
    *,
    user: User,
    name: str,
    scopes: list[str],
    expires_at: date | None,
) -> tuple[PersonalAccessToken, str]:
    _check_token_request(scopes, PAT_SCOPES)
    _check_expiry(expires_at)
    assert user.id is not None
    secret = new_personal_access_token()
    token = await tokens.create_personal_access_token(
        session, user_id=user.id, name=name, secret=secret, scopes=scopes, expires_at=expires_at
    )
    return token, secret


async def rotate_personal_access_token(
    session: AsyncSession, *, token: PersonalAccessToken, expires_at: date | None
) -> tuple[PersonalAccessToken, str]:
    """Revoke the token and issue its successor (same owner, name, scopes and group)."""
    if not access.personal_access_token_is_valid(token):
        raise ValidationFailed("Token already revoked or expired")
    expires_at = expires_at or date.today() + ROTATED_TOKEN_LIFETIME
    _check_expiry(expires_at)
    await tokens.revoke_personal_access_token(session, token)
    secret = new_personal_access_token()
    successor = await tokens.create_personal_access_token(
        session,
        user_id=token.user_id,
        name=token.name,
        secret=secret,
        scopes=token.scope_list,
        expires_at=expires_at,
        resource_group_id=token.resource_group_id,
    )
    return successor, secret


async def revoke_personal_access_token(
    session: AsyncSession, *, token: PersonalAccessToken
) -> None:
    """Revoke a token; a group access token's bot user is blocked too, as it has no other use."""
    await tokens.revoke_personal_access_token(session, token)
    if token.resource_group_id is not None:
        bot = await users.get(session, token.user_id)
        if bot is not None and bot.bot:
            await users.set_state(session, bot, "blocked")


async def create_group_access_token(
    session: AsyncSession,
    *,
    group: Group,
    name: str,
    scopes: list[str],
    access_level: int,
    expires_at: date | None,
) -> tuple[PersonalAccessToken, str]:
    """A bot user, a member of the group at `access_level`, owning one token (GitLab's model)."""
    _check_token_request(scopes, PAT_SCOPES)
    _check_access_level(access_level)
    _check_expiry(expires_at)
    assert group.id is not None
    bot = await users.create_bot(
        session, username=f"group_{group.id}_bot_{secrets.token_hex(16)}", name=name
    )
    assert bot.id is not None
    await groups.save_member(
        session, GroupMember(group_id=group.id, user_id=bot.id, access_level=access_level)
    )
    secret = new_personal_access_token()
    token = await tokens.create_personal_access_token(
        session,
        user_id=bot.id,
        name=name,
        secret=secret,
        scopes=scopes,
        expires_at=expires_at,
        resource_group_id=group.id,
    )
    return token, secret


# -- deploy tokens --------------------------------------------------------------------------


async def create_deploy_token(
    session: AsyncSession,
    *,
    group: Group,
    name: str,
    username: str | None,
    scopes: list[str],
    expires_at: datetime | None,
) -> tuple[DeployToken, str]:
    _check_token_request(scopes, DEPLOY_TOKEN_SCOPES)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ValidationFailed("expires_at must be in the future")
    if username is not None and username.lower() in RESERVED_USERNAMES:
        raise ValidationFailed(f"username {username!r} is reserved")
    # Registry logins find a deploy token by its secret and then compare usernames, so one
    # username per token keeps `docker login` unambiguous.
    taken = "Deploy token username has already been taken"
    if username and await tokens.find_deploy_token_by_username(session, username) is not None:
        raise Conflict(taken)
    assert group.id is not None
    secret = new_deploy_token()
    with _unique(taken):
        token = await tokens.create_deploy_token(
            session,
            group_id=group.id,
            name=name,
            username=username,
            secret=secret,
            scopes=scopes,
            expires_at=expires_at,
        )
    return token, secret


# -- CI runners and jobs -------------------------------------------------------------------


async def create_runner(session: AsyncSession, *, description: str) -> tuple[CiRunner, str]:
    secret = new_runner_token()
    return await tokens.create_runner(session, description=description, secret=secret), secret


async def start_ci_job(
    session: AsyncSession,
    *,
    group: Group,
    user: User,
    timeout: timedelta,
    runner: CiRunner | None = None,
) -> tuple[CiJobToken, str]:
    """A job of `user` in `group`: its token pulls with the user's permissions until the job
    ends or `timeout` passes. A token that could pull nothing from its own group is refused,
    so a misconfigured runner fails at once instead of in every job."""
    actor = access.for_user(user)
    if actor is None:
        raise ValidationFailed(f"user {user.username!r} is blocked")
    if not await access.can_pull(session, actor, group):
        raise ValidationFailed(f"user {user.username!r} may not pull from {group.full_path!r}")
    assert group.id is not None and user.id is not None
    secret = new_job_token()
    job = await tokens.create_job_token(
        session,
        group_id=group.id,
        user_id=user.id,
        runner_id=runner.id if runner else None,
        secret=secret,
        expires_at=datetime.now(UTC) + timeout,
    )
    return job, secret


# -- groups and members ---------------------------------------------------------------------


async def create_group(
    session: AsyncSession,
    *,
    name: str,
    path: str,
    parent: Group | None = None,
    creator: User | None = None,
) -> Group:
    """Create a group; its creator (if given) becomes its Owner, as in GitLab."""
    if not group_segment_valid(path):
        raise ValidationFailed(f"path {path!r} is not a valid group path")
    full_path = f"{parent.full_path}/{path}" if parent else path
    if len(full_path) > MAX_FULL_PATH:
        raise ValidationFailed(f"the full path may have at most {MAX_FULL_PATH} characters")
    if f"/{PROXY_INFIX}/" in f"/{full_path.lower()}/":
        # `<group>/dependency_proxy/containers/<image>` could no longer be split unambiguously.
        raise ValidationFailed(f"a group path may not contain {PROXY_INFIX!r}")
    taken = 'Failed to save group {:path=>["has already been taken"]}'
    if await groups.get_by_full_path(session, full_path) is not None:
        raise ValidationFailed(taken)  # GitLab answers a taken group path with 400
    with _unique(taken):
        group = await groups.create(session, name=name or path, path=path, parent=parent)
    if creator is not None:
        await add_member(session, group=group, user=creator, access_level=AccessLevel.OWNER)
    return group


async def delete_group(session: AsyncSession, *, group: Group) -> None:
    """Delete a group and its subgroups; the bots of their access tokens go with them."""
    bot_ids = await tokens.resource_bot_ids(session, await groups.subtree_ids(session, group))
    await groups.delete_group(session, group)
    for bot_id in bot_ids:
        bot = await users.get(session, bot_id)
        if bot is not None and bot.bot:
            await users.delete(session, bot)


def _check_access_level(access_level: int) -> None:
    if access_level not in MEMBER_ACCESS_LEVELS:
        raise ValidationFailed("access_level does not have a valid value")


async def add_member(
    session: AsyncSession,
    *,
    group: Group,
    user: User,
    access_level: int,
    expires_at: date | None = None,
    replace: bool = True,
) -> GroupMember:
    """Make `user` a member; with `replace`, an existing membership takes the new level."""
    _check_access_level(access_level)
    _check_expiry(expires_at)
    assert group.id is not None and user.id is not None
    member = await groups.get_member(session, group_id=group.id, user_id=user.id)
    if member is not None and not replace:
        raise Conflict("Member already exists")
    member = member or GroupMember(group_id=group.id, user_id=user.id)
    member.access_level = access_level
    member.expires_at = expires_at
    with _unique("Member already exists"):
        await groups.save_member(session, member)
    return member


async def update_member(
    session: AsyncSession, *, member: GroupMember, access_level: int, expires_at: date | None
) -> GroupMember:
    _check_access_level(access_level)
    _check_expiry(expires_at)
    member.access_level = access_level
    member.expires_at = expires_at
    await groups.save_member(session, member)
    return member


@dataclass(frozen=True, slots=True)
class EffectiveMember:
    """A user's strongest membership on a group or its ancestors."""

    user: User
    membership: GroupMember


async def effective_members(session: AsyncSession, *, group: Group) -> list[EffectiveMember]:
    """Everyone with access to the group through it or an ancestor, by user id; the highest
    level wins, and the nearest group on a tie (what `access.access_level` computes)."""
    ancestry = await groups.ancestor_ids(session, group)  # nearest first

    def rank(membership: GroupMember) -> tuple[int, int]:
        return membership.access_level, -ancestry.index(membership.group_id)

    best: dict[int, EffectiveMember] = {}
    for membership, user in await groups.active_memberships(session, ancestry):
        current = best.get(membership.user_id)
        if current is None or rank(membership) > rank(current.membership):
            best[membership.user_id] = EffectiveMember(user=user, membership=membership)
    return [best[user_id] for user_id in sorted(best)]


# -- application settings -------------------------------------------------------------------


async def update_application_settings(
    session: AsyncSession,
    *,
    container_registry_token_expire_delay: int | None = None,
    dependency_proxy_enabled: bool | None = None,
) -> ApplicationSetting:
    setting = await groups.application_settings(session)
    if container_registry_token_expire_delay is not None:
        if container_registry_token_expire_delay < 1:
            raise ValidationFailed("container_registry_token_expire_delay must be at least 1")
        setting.container_registry_token_expire_delay = container_registry_token_expire_delay
    if dependency_proxy_enabled is not None:
        setting.dependency_proxy_enabled = dependency_proxy_enabled
    await groups.save_application_settings(session, setting)
    return setting
