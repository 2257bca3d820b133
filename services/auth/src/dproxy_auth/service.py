"""Identity operations shared by the API and the CLI (no second copy of the rules)."""

from __future__ import annotations

import logging
import secrets
from datetime import date

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import passwords
from dproxy_auth.tokens import PAT_SCOPES, new_personal_access_token
from dproxy_shared.models import AccessLevel, Group, GroupMember, PersonalAccessToken, User
from dproxy_shared.oci.reference import group_segment_valid
from dproxy_shared.repositories import groups, users
from dproxy_shared.runtime import Runtime

log = logging.getLogger(__name__)

ROOT_USERNAME = "root"


class ValidationFailed(Exception):
    """Input the caller must fix; the message says what."""


class Conflict(Exception):
    pass


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
    if await users.get_by_username(session, username) is not None:
        raise Conflict("Username has already been taken")
    if password is not None and len(password) < 8:
        raise ValidationFailed("password is too short (minimum is 8 characters)")
    password_hash = await passwords.hash_password(password) if password else None
    return await users.create(
        session,
        username=username,
        password_hash=password_hash,
        name=name,
        email=email,
        admin=admin,
    )


async def create_personal_access_token(
    session: AsyncSession,
    *,
    user: User,
    name: str,
    scopes: list[str],
    expires_at: date | None,
) -> tuple[PersonalAccessToken, str]:
    unknown = set(scopes) - PAT_SCOPES
    if not scopes or unknown:
        raise ValidationFailed(
            f"scopes must be a non-empty subset of {sorted(PAT_SCOPES)}"
            + (f"; unknown: {sorted(unknown)}" if unknown else "")
        )
    if expires_at is not None and expires_at <= date.today():
        raise ValidationFailed("expires_at must be in the future")
    assert user.id is not None
    secret = new_personal_access_token()
    token = await users.create_personal_access_token(
        session, user_id=user.id, name=name, secret=secret, scopes=scopes, expires_at=expires_at
    )
    return token, secret


async def create_group(
    session: AsyncSession, *, name: str, path: str, parent: Group | None = None
) -> Group:
    if not group_segment_valid(path):
        raise ValidationFailed(f"path {path!r} is not a valid group path")
    full_path = f"{parent.full_path}/{path}" if parent else path
    if await groups.get_by_full_path(session, full_path) is not None:
        raise Conflict('Failed to save group {:path=>["has already been taken"]}')
    return await groups.create(session, name=name or path, path=path, parent=parent)


async def add_member(
    session: AsyncSession, *, group: Group, user: User, access_level: int
) -> GroupMember:
    if access_level not in {int(level) for level in AccessLevel if level}:
        raise ValidationFailed("access_level does not have a valid value")
    assert group.id is not None and user.id is not None
    return await groups.add_member(
        session, group_id=group.id, user_id=user.id, access_level=access_level
    )
