"""What every service needs at run time, built once in the app's lifespan (never at import)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.coordination import Coordination
from dproxy_shared.db import SessionFactory, create_engine, session_factory
from dproxy_shared.jwt_tokens import Claims
from dproxy_shared.settings import Settings
from dproxy_shared.storage import BlobStore, open_blob_store

if TYPE_CHECKING:
    from redis.asyncio import Redis


class TokenVerifier(Protocol):
    async def verify(self, token: str, *, issuer: str) -> Claims: ...


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    store: BlobStore
    coordination: Coordination
    redis: Redis | None = None

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
        redis: Redis | None = None
        if settings.redis_url:
            from dproxy_shared.coordination_redis import redis_coordination

            coordination, redis = redis_coordination(settings.redis_url)
        else:
            coordination = Coordination.in_process()
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            store=open_blob_store(settings),
            coordination=coordination,
            redis=redis,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block succeeds, rolled back otherwise.

        Keep these short; never hold one open while a blob streams.
        """
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def close(self) -> None:
        await self.store.close()
        await self.engine.dispose()
        if self.redis is not None:
            await self.redis.aclose()
