"""Who is calling: credentials from `/jwt/auth` or the API resolved to an actor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth.passwords import PasswordVerifier
from dproxy_auth.tokens import PERSONAL_ACCESS_TOKEN_PREFIX, REGISTRY_PULL_SCOPES
from dproxy_shared.models import PersonalAccessToken, User
from dproxy_shared.repositories import users


@dataclass(frozen=True, slots=True)
class Actor:
    user: User
    via_token: PersonalAccessToken | None = None

    @property
    def subject(self) -> str:
        """The JWT `sub`: names the actor, never carries a secret."""
        if self.via_token is not None:
            return f"personal_access_token:{self.via_token.id}"
        return f"user:{self.user.id}"


async def from_password_or_token(
    session: AsyncSession,
    username: str,
    secret: str,
    *,
    registry: bool,
    passwords: PasswordVerifier,
) -> Actor | None:
    """Basic credentials: a personal access token (any username, as GitLab) or a password."""
    if secret.startswith(PERSONAL_ACCESS_TOKEN_PREFIX):
        actor = await from_personal_access_token(session, secret)
        if actor is not None:
            token_scopes = set(actor.via_token.scope_list if actor.via_token else [])
            if not registry or token_scopes & REGISTRY_PULL_SCOPES:
                return actor
            return None
    user = await users.get_by_username(session, username)
    # Verified even for unknown users, so timing does not tell which usernames exist.
    valid = await passwords.verify(user.password_hash if user else None, secret)
    if user is None or not valid or user.state != "active" or user.bot:
        return None
    return Actor(user)


async def from_personal_access_token(session: AsyncSession, secret: str) -> Actor | None:
    token = await users.find_personal_access_token(session, secret)
    if token is None or token.revoked:
        return None
    if token.expires_at is not None and token.expires_at <= date.today():
        return None
    user = await users.get(session, token.user_id)
    if user is None or user.state != "active":
        return None
    await users.mark_token_used(session, token)
    return Actor(user, token)
