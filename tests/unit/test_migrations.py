"""The Alembic migrations build exactly the schema the models describe, and run both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlmodel import SQLModel

from dproxy_shared import models  # noqa: F401  (registers the tables)
from dproxy_shared.db import alembic_config, create_engine, migrate
from tests.support import services


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def _schema_diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same migrations on both backends."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
        return
    port: int = request.getfixturevalue("postgres_port")
    with services.postgres_database(port) as url:
        yield url


def test_migrations_match_the_models(database_url: str) -> None:
    migrate(database_url)
    assert asyncio.run(_schema_diff(database_url)) == []


def test_migrations_downgrade_and_upgrade_again(database_url: str) -> None:
    migrate(database_url)
    command.downgrade(alembic_config(database_url), "base")
    migrate(database_url)
    assert asyncio.run(_schema_diff(database_url)) == []
