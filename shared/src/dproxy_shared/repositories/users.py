from __future__ import annotations

from sqlalchemy import func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.models import User
from dproxy_shared.repositories._paging import Window, page


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


async def set_state(session: AsyncSession, user: User, state: str) -> None:
    user.state = state
    session.add(user)
    await session.flush()


async def delete(session: AsyncSession, user: User) -> None:
    await session.delete(user)
    await session.flush()


async def list_page(
    session: AsyncSession,
    *,
    window: Window,
    username: str | None = None,
    search: str | None = None,
) -> tuple[list[User], int]:
    """Users by id; `username` matches exactly, `search` anywhere in username, name or email."""
    query = select(User).order_by(col(User.id))
    if username is not None:
        query = query.where(User.username == username.lower())
    if search:
        needle = search.lower()
        query = query.where(
            or_(
                col(User.username).contains(needle, autoescape=True),
                func.lower(col(User.name)).contains(needle, autoescape=True),
                func.lower(col(User.email)).contains(needle, autoescape=True),
            )
        )
    return await page(session, query, window)


async def create_bot(session: AsyncSession, *, username: str, name: str) -> User:
    """A bot user (behind a group access token): no password, so it can never log in."""
    user = User(username=username.lower(), name=name, password_hash=None, bot=True)
    session.add(user)
    await session.flush()
    return user
