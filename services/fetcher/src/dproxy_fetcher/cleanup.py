"""The cache cleanup: a periodic job in every fetcher process (SPEC §8).

Each pass marks the rows of enabled TTL policies that nobody read for `ttl` days
`pending_destruction` (and, with `DPROXY_CACHE_MAX_BYTES`, those of the least recently read
objects until the cache fits), then claims pending rows in batches (`SKIP LOCKED`, so replicas
share the work), statuses `pending_destruction → processing → (deleted | error)`. Rows read in
the last `DPROXY_CLEANUP_READ_GRACE` seconds wait for a later pass: a download that started
before the purge may still be streaming their object. A digest's rows are deleted, and its
object with them when no other row references it, while the cleanup holds the digest's fill
lease (no download of it is committing meanwhile) and its exclusive database lock (no reader
is recording a row for it meanwhile; see `repositories/lifecycle.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import timedelta

from dproxy_shared.metrics import CLEANUP_DELETIONS
from dproxy_shared.models import CacheStatus
from dproxy_shared.oci.digest import Digest
from dproxy_shared.repositories import lifecycle
from dproxy_shared.repositories.lifecycle import TABLES, CacheTable
from dproxy_shared.runtime import Runtime

log = logging.getLogger(__name__)

# A `processing` row older than this belongs to a cleanup that died: claim it again.
ABANDONED_AFTER = timedelta(minutes=10)
LEASE_SECONDS = 60.0

# The rows of one digest claimed by a pass, per table.
Claimed = dict[CacheTable, list[int]]


class Cleanup:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dproxy-cleanup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("cache cleanup pass failed; retrying at the next interval")
            await asyncio.sleep(self._runtime.settings.cleanup_interval)

    async def run_once(self) -> None:
        async with self._runtime.session() as session:
            await lifecycle.release_abandoned(session, ABANDONED_AFTER)
            await lifecycle.mark_expired(session)
            if self._runtime.settings.cache_max_bytes:
                await lifecycle.mark_over_quota(session, self._runtime.settings.cache_max_bytes)
        while await self._destroy_batch():
            pass

    async def _destroy_batch(self) -> bool:
        """Claim and destroy one batch; False when nothing was pending."""
        settings = self._runtime.settings
        by_digest: defaultdict[str, Claimed] = defaultdict(lambda: defaultdict(list))
        grace = timedelta(seconds=settings.cleanup_read_grace)
        async with self._runtime.session() as session:
            for table in TABLES:
                rows = await lifecycle.claim_pending(
                    session, table, settings.cleanup_batch_size, unread_for=grace
                )
                for row_id, digest in rows.items():
                    by_digest[digest][table].append(row_id)
        if not by_digest:
            return False
        limit = asyncio.Semaphore(settings.cleanup_concurrency)

        async def bounded(digest: str, claimed: Claimed) -> bool:
            async with limit:
                return await self._destroy(digest, claimed)

        done = await asyncio.gather(*(bounded(d, c) for d, c in by_digest.items()))
        # Digests skipped because a download of them is committing are retried next pass.
        return any(done)

    async def _destroy(self, digest: str, claimed: Claimed) -> bool:
        coordination = self._runtime.coordination
        lease = await coordination.locks.try_acquire(f"fill:{digest}", LEASE_SECONDS)
        if lease is None:
            await self._set_status(claimed, CacheStatus.PENDING_DESTRUCTION)
            return False
        try:
            async with self._runtime.session() as session:
                await lifecycle.lock_digest(session, digest, shared=False)
                for table, ids in claimed.items():
                    deleted = await lifecycle.delete_rows(session, table, ids)
                    CLEANUP_DELETIONS.labels(
                        table.__tablename__.removeprefix("dependency_proxy_")
                    ).inc(deleted)
                # Inside the transaction: a reader waits for it, then finds no object.
                unused = not await lifecycle.referenced(session, digest)
                if unused and await self._runtime.store.delete(Digest.parse(digest)):
                    CLEANUP_DELETIONS.labels("objects").inc()
            return True
        except Exception:
            log.exception("cleanup of %s failed; its rows are marked error", digest)
            await self._set_status(claimed, CacheStatus.ERROR)
            return True
        finally:
            await lease.release()

    async def _set_status(self, claimed: Claimed, status: CacheStatus) -> None:
        async with self._runtime.session() as session:
            for table, ids in claimed.items():
                await lifecycle.set_status(session, table, ids, status)
