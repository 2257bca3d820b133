"""Offset pagination for list queries: one window of rows plus the total, in two statements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar, TypeVarTuple, overload

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select, SelectOfScalar

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class Window:
    offset: int
    limit: int


AnySelect = Select[*tuple[Any, ...]] | SelectOfScalar[Any]


async def count(session: AsyncSession, query: AnySelect) -> int:
    counted = select(func.count()).select_from(query.order_by(None).subquery())
    return int((await session.exec(counted)).one())


@overload
async def page(
    session: AsyncSession, query: SelectOfScalar[T], window: Window
) -> tuple[list[T], int]: ...


@overload
async def page(
    session: AsyncSession, query: Select[*Ts], window: Window
) -> tuple[list[tuple[*Ts]], int]: ...


async def page(session: AsyncSession, query: AnySelect, window: Window) -> tuple[list[Any], int]:
    """The rows of `query` (which must be ordered) inside `window`, and how many there are."""
    total = await count(session, query)
    rows = await session.exec(query.offset(window.offset).limit(window.limit))
    return list(rows.all()), total
