from __future__ import annotations

import hashlib
from datetime import date

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.models import PersonalAccessToken, User, utcnow


async def get(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.exec(select(User).where(User.username == username.lower()))
    return result.first()


async def list_all(session: AsyncSession) -> list[User]:
    return list((await session.exec(select(User).order_by(col(User.id)))).all())


async def create(
    session: AsyncSession,
    *,
    username: str,
    password_hash: str | None,
    name: str = "",
    email: str | None = None,
    admin: bool = False,
) -> User:
    user = User(
        username=username.lower(),
        name=name or username,
        email=email,
        password_hash=password_hash,
        admin=admin,
    )
    session.add(user)
    await session.flush()
    return user


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_personal_access_token(
    session: AsyncSession,
    *,
    user_id: int,
    name: str,
    secret: str,
    scopes: list[str],
    expires_at: date | None,
) -> PersonalAccessToken:
    token = PersonalAccessToken(
        user_id=user_id,
        name=name,
        token_digest=token_digest(secret),
        scopes=" ".join(sorted(set(scopes))),
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    return token


async def find_personal_access_token(
    session: AsyncSession, secret: str
) -> PersonalAccessToken | None:
    """The token whose secret this is, found by the digest's unique index."""
    result = await session.exec(
        select(PersonalAccessToken).where(PersonalAccessToken.token_digest == token_digest(secret))
    )
    return result.first()


async def mark_token_used(session: AsyncSession, token: PersonalAccessToken) -> None:
    token.last_used_at = utcnow()
    session.add(token)
    await session.flush()
