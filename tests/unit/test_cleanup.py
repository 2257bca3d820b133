"""The cache cleanup against a real database (SQLite, and Postgres where it matters) and
real local storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from dproxy_fetcher.cleanup import Cleanup
from dproxy_shared import cache_lookup
from dproxy_shared.db import migrate
from dproxy_shared.models import CacheStatus, DependencyProxyBlob, Group, utcnow
from dproxy_shared.oci.digest import Digest
from dproxy_shared.repositories import cache, lifecycle
from dproxy_shared.runtime import Runtime
from dproxy_shared.settings import Settings
from dproxy_shared.storage.base import put_bytes
from tests.support import services


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Rows are destroyed as soon as they are marked, unless a test sets a read grace.
    settings = Settings(data_dir=tmp_path, cleanup_batch_size=2, cleanup_read_grace=0)
    migrate(settings.database_url)  # outside the event loop: it runs one of its own
    return settings


@pytest.fixture(params=["sqlite", "postgres"])
def both_databases(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """The same settings on SQLite, then on a Postgres copy of the migrated template."""
    if request.param == "sqlite":
        yield settings
        return
    port: int = request.getfixturevalue("postgres_port")
    template: str = request.getfixturevalue("postgres_template")
    with services.postgres_database(port, template) as url:
        yield settings.model_copy(update={"database_url": url})


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime.open(settings)
    yield runtime
    await runtime.close()


async def _group(runtime: Runtime, path: str) -> int:
    async with runtime.session() as session:
        group = Group(name=path, path=path, full_path=path)
        session.add(group)
        await session.flush()
        assert group.id is not None
        return group.id


async def _object(runtime: Runtime, content: bytes) -> str:
    digest = Digest.of(content, "sha256")
    await put_bytes(runtime.store, content, digest)
    return str(digest)


async def _blob(runtime: Runtime, group_id: int, digest: str) -> None:
    async with runtime.session() as session:
        await cache.save_blob(session, group_id=group_id, digest=digest, size=1)


async def _statuses(runtime: Runtime, group_id: int) -> list[int]:
    async with runtime.session() as session:
        rows, _ = await lifecycle.list_blobs(session, group_id, lifecycle.Window(0, 100))
    return sorted(row.status for row in rows)


async def _stored(runtime: Runtime, digest: str) -> bool:
    return await runtime.store.stat(Digest.parse(digest)) is not None


async def test_a_purge_deletes_only_what_no_other_group_references(runtime: Runtime) -> None:
    purged, kept = await _group(runtime, "purged"), await _group(runtime, "kept")
    shared, own = await _object(runtime, b"shared"), await _object(runtime, b"own")
    manifest = await _object(runtime, b"{}")
    for digest in (shared, own):
        await _blob(runtime, purged, digest)
    await _blob(runtime, kept, shared)
    async with runtime.session() as session:
        await cache.save_manifest(
            session,
            group_id=purged,
            image_name="library/alpine",
            file_name="latest",
            digest=manifest,
            content_type="application/vnd.oci.image.manifest.v1+json",
            size=2,
        )
        assert await cache.mark_group_for_destruction(session, purged) == 3

    await Cleanup(runtime).run_once()

    assert await _statuses(runtime, purged) == []
    assert await _statuses(runtime, kept) == [CacheStatus.DEFAULT]
    assert await _stored(runtime, shared)
    assert not await _stored(runtime, own)
    assert not await _stored(runtime, manifest)
    async with runtime.session() as session:
        assert not await cache.purge_in_progress(session, purged)


async def test_a_digest_being_filled_waits_for_the_next_pass(runtime: Runtime) -> None:
    group = await _group(runtime, "g")
    digest = await _object(runtime, b"filling")
    await _blob(runtime, group, digest)
    async with runtime.session() as session:
        await cache.mark_group_for_destruction(session, group)
    fill = await runtime.coordination.locks.try_acquire(f"fill:{digest}", 30)
    assert fill is not None

    await Cleanup(runtime).run_once()
    assert await _statuses(runtime, group) == [CacheStatus.PENDING_DESTRUCTION]
    assert await _stored(runtime, digest)

    await fill.release()
    await Cleanup(runtime).run_once()
    assert await _statuses(runtime, group) == []
    assert not await _stored(runtime, digest)


async def test_a_row_read_within_the_grace_keeps_its_object_until_the_grace_ends(
    runtime: Runtime,
) -> None:
    runtime.settings.cleanup_read_grace = 60
    group = await _group(runtime, "g")
    digest = await _object(runtime, b"being downloaded")
    await _blob(runtime, group, digest)  # read just now: a client may still be streaming it
    async with runtime.session() as session:
        await cache.mark_group_for_destruction(session, group)

    await Cleanup(runtime).run_once()
    assert await _statuses(runtime, group) == [CacheStatus.PENDING_DESTRUCTION]
    assert await _stored(runtime, digest)

    async with runtime.session() as session:
        await session.exec(
            update(DependencyProxyBlob).values(read_at=utcnow() - timedelta(seconds=61))
        )
    await Cleanup(runtime).run_once()
    assert await _statuses(runtime, group) == []
    assert not await _stored(runtime, digest)


async def test_ttl_marks_unread_rows_even_next_to_a_pending_twin(runtime: Runtime) -> None:
    group = await _group(runtime, "g")
    digest = await _object(runtime, b"old")
    await _blob(runtime, group, digest)
    async with runtime.session() as session:
        await cache.mark_group_for_destruction(session, group)
        await lifecycle.set_ttl_policy(session, group, enabled=True, ttl=1)
    await _blob(runtime, group, digest)  # pulled again while the purge was pending
    async with runtime.session() as session:
        await session.exec(
            update(DependencyProxyBlob)
            .where(DependencyProxyBlob.status == CacheStatus.DEFAULT)  # type: ignore[arg-type]
            .values(read_at=utcnow() - timedelta(days=2))
        )
        # Its twin is still pending: marking it now would break the unique key.
        assert await lifecycle.mark_expired(session) == 0

    cleanup = Cleanup(runtime)
    await cleanup.run_once()  # deletes the pending row, then marks and deletes its twin
    await cleanup.run_once()
    assert await _statuses(runtime, group) == []
    assert not await _stored(runtime, digest)


async def test_recent_rows_and_disabled_policies_are_kept(runtime: Runtime) -> None:
    recent, disabled = await _group(runtime, "recent"), await _group(runtime, "disabled")
    digest = await _object(runtime, b"kept")
    for group in (recent, disabled):
        await _blob(runtime, group, digest)
    async with runtime.session() as session:
        await lifecycle.set_ttl_policy(session, recent, enabled=True, ttl=1)
        await lifecycle.set_ttl_policy(session, disabled, enabled=False, ttl=1)
        await session.exec(
            update(DependencyProxyBlob)
            .where(DependencyProxyBlob.group_id == disabled)  # type: ignore[arg-type]
            .values(read_at=utcnow() - timedelta(days=2))
        )
    await Cleanup(runtime).run_once()
    assert await _statuses(runtime, recent) == [CacheStatus.DEFAULT]
    assert await _statuses(runtime, disabled) == [CacheStatus.DEFAULT]
    assert await _stored(runtime, digest)


@pytest.mark.parametrize("batch", [500, 1])
async def test_a_size_quota_evicts_the_least_recently_read_objects(
    both_databases: Settings, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch of 1 makes the pass page through the objects one at a time.
    monkeypatch.setattr(lifecycle, "QUOTA_BATCH", batch)
    runtime = Runtime.open(both_databases.model_copy(update={"cache_max_bytes": 25}))
    try:
        group = await _group(runtime, "g")
        digests = [await _object(runtime, bytes([n]) * 10) for n in range(4)]
        for age, digest in enumerate(reversed(digests)):
            async with runtime.session() as session:
                await cache.save_blob(session, group_id=group, digest=digest, size=10)
                await session.exec(
                    update(DependencyProxyBlob)
                    .where(DependencyProxyBlob.digest == digest)  # type: ignore[arg-type]
                    .values(read_at=utcnow() - timedelta(hours=age))
                )
        await Cleanup(runtime).run_once()
        kept = [await _stored(runtime, digest) for digest in digests]
        assert kept == [False, False, True, True]  # 20 of 40 bytes: the two read last
    finally:
        await runtime.close()


async def test_rows_an_interrupted_cleanup_left_processing_are_finished(
    runtime: Runtime,
) -> None:
    group = await _group(runtime, "g")
    digest = await _object(runtime, b"interrupted")
    for status in (CacheStatus.PROCESSING, CacheStatus.PENDING_DESTRUCTION):
        await _blob(runtime, group, digest)
        async with runtime.session() as session:
            await session.exec(
                update(DependencyProxyBlob)
                .where(DependencyProxyBlob.status == CacheStatus.DEFAULT)  # type: ignore[arg-type]
                .values(status=status, updated_at=utcnow() - timedelta(hours=1))
            )
    await Cleanup(runtime).run_once()
    assert await _statuses(runtime, group) == []
    assert not await _stored(runtime, digest)


async def test_a_reader_adopting_an_object_waits_for_the_cleanup_deleting_it(
    both_databases: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull of an object another group's purge is deleting: without the digest lock the
    reader would record a row between the cleanup's reference count and its delete, and
    that row would point at nothing."""
    runtime = Runtime.open(both_databases)
    try:
        purged, reader = await _group(runtime, "purged"), await _group(runtime, "reader")
        digest = await _object(runtime, b"contended")
        await _blob(runtime, purged, digest)
        async with runtime.session() as session:
            await cache.mark_group_for_destruction(session, purged)

        deleting = asyncio.Event()
        delete = runtime.store.delete

        async def slow_delete(target: Digest) -> bool:
            deleting.set()
            await asyncio.sleep(0.5)  # the reader runs meanwhile
            return await delete(target)

        monkeypatch.setattr(runtime.store, "delete", slow_delete)
        cleanup = asyncio.create_task(Cleanup(runtime).run_once())
        await deleting.wait()
        found = await cache_lookup.find_blob(runtime, group_id=reader, digest=Digest.parse(digest))
        await cleanup

        assert found is None, "served an object the cleanup deleted"
        assert not await _stored(runtime, digest)
        assert await _statuses(runtime, reader) == [], "a row points at a deleted object"
    finally:
        await runtime.close()
