"""`INSERT … ON CONFLICT DO UPDATE` for SQLite and Postgres (same API, different modules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession


async def upsert(
    session: AsyncSession,
    table: Any,
    values: dict[str, Any],
    *,
    conflict: Sequence[str],
    update: Sequence[str],
) -> None:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=list(conflict),
        set_={column: statement.excluded[column] for column in update},
    )
    await session.exec(statement)
