"""The cache's lifecycle: what a group has cached, its TTL policy, and the cleanup's SQL.

Deleting an object races with readers that reference it again. Both sides serialize on the
digest inside a transaction (`lock_digest`): a reader records its row under a shared lock and
checks the object only after committing; the cleanup counts references and deletes the object
under the exclusive lock, before committing. So a reader either commits first (and the cleanup
sees its row and keeps the object) or finds the object already gone (a miss). SQLite takes
the write lock at BEGIN (see `db.py`), which serializes the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, CursorResult, delete, exists, func, tuple_, union_all, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.models import (
    CacheStatus,
    DependencyProxyBlob,
    DependencyProxyImageTtlGroupPolicy,
    DependencyProxyManifest,
    utcnow,
)
from dproxy_shared.repositories._paging import Window, page

CacheTable = type[DependencyProxyManifest] | type[DependencyProxyBlob]
TABLES: tuple[CacheTable, ...] = (DependencyProxyManifest, DependencyProxyBlob)
# Rows that keep their object alive; `error` rows do not.
REFERENCING = (CacheStatus.DEFAULT, CacheStatus.PENDING_DESTRUCTION, CacheStatus.PROCESSING)


async def lock_digest(session: AsyncSession, digest: str, *, shared: bool) -> None:
    """Until the transaction ends: readers share the digest, the cleanup holds it alone."""
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite: every transaction already holds the database's write lock
    lock = func.pg_advisory_xact_lock_shared if shared else func.pg_advisory_xact_lock
    await session.exec(select(lock(func.hashtextextended(digest, 0))))


# -- visibility -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheStats:
    image_count: int
    blob_count: int
    total_size_bytes: int


async def stats(session: AsyncSession, group_id: int) -> CacheStats:
    counts: list[tuple[int, int]] = []
    for table in TABLES:
        result = await session.exec(
            select(func.count(), func.coalesce(func.sum(table.size), 0)).where(
                table.group_id == group_id, table.status == CacheStatus.DEFAULT
            )
        )
        count, size = result.one()
        counts.append((int(count), int(size)))
    (images, image_bytes), (blobs, blob_bytes) = counts
    return CacheStats(images, blobs, image_bytes + blob_bytes)


async def list_manifests(
    session: AsyncSession, group_id: int, window: Window
) -> tuple[list[DependencyProxyManifest], int]:
    query = (
        select(DependencyProxyManifest)
        .where(DependencyProxyManifest.group_id == group_id)
        .order_by(col(DependencyProxyManifest.id))
    )
    return await page(session, query, window)


async def list_blobs(
    session: AsyncSession, group_id: int, window: Window
) -> tuple[list[DependencyProxyBlob], int]:
    query = (
        select(DependencyProxyBlob)
        .where(DependencyProxyBlob.group_id == group_id)
        .order_by(col(DependencyProxyBlob.id))
    )
    return await page(session, query, window)


# -- TTL policy -----------------------------------------------------------------------------


async def ttl_policy(session: AsyncSession, group_id: int) -> DependencyProxyImageTtlGroupPolicy:
    """The group's policy; GitLab's defaults (disabled, 90 days) when it never set one."""
    policy = await session.get(DependencyProxyImageTtlGroupPolicy, group_id)
    return policy or DependencyProxyImageTtlGroupPolicy(group_id=group_id)


async def set_ttl_policy(
    session: AsyncSession, group_id: int, *, enabled: bool, ttl: int
) -> DependencyProxyImageTtlGroupPolicy:
    policy = await session.get(DependencyProxyImageTtlGroupPolicy, group_id)
    policy = policy or DependencyProxyImageTtlGroupPolicy(group_id=group_id)
    policy.enabled = enabled
    policy.ttl = ttl
    policy.updated_at = utcnow()
    session.add(policy)
    await session.flush()
    return policy


# -- cleanup --------------------------------------------------------------------------------


def without_twin(table: CacheTable, status: CacheStatus) -> ColumnElement[bool]:
    """Rows that can move to `status` without breaking the table's unique key (a row of the
    same group and image or digest may already be there, marked by an earlier pass)."""
    if table is DependencyProxyManifest:
        manifest = aliased(DependencyProxyManifest)
        return ~exists().where(
            col(manifest.group_id) == DependencyProxyManifest.group_id,
            col(manifest.image_name) == DependencyProxyManifest.image_name,
            col(manifest.file_name) == DependencyProxyManifest.file_name,
            col(manifest.status) == status,
        )
    blob = aliased(DependencyProxyBlob)
    return ~exists().where(
        col(blob.group_id) == DependencyProxyBlob.group_id,
        col(blob.digest) == DependencyProxyBlob.digest,
        col(blob.status) == status,
    )


def _rowcount(result: object) -> int:
    return cast(CursorResult[Any], result).rowcount or 0


async def mark_expired(session: AsyncSession) -> int:
    """Rows of enabled TTL policies unread for `ttl` days → pending_destruction."""
    policies = await session.exec(
        select(DependencyProxyImageTtlGroupPolicy).where(
            col(DependencyProxyImageTtlGroupPolicy.enabled)
        )
    )
    now = utcnow()
    marked = 0
    for policy in policies.all():
        cutoff = now - timedelta(days=policy.ttl)
        for table in TABLES:
            result = await session.exec(
                update(table)
                .where(
                    col(table.group_id) == policy.group_id,
                    col(table.status) == CacheStatus.DEFAULT,
                    col(table.read_at) < cutoff,
                    without_twin(table, CacheStatus.PENDING_DESTRUCTION),
                )
                .values(status=CacheStatus.PENDING_DESTRUCTION, updated_at=now)
            )
            marked += _rowcount(result)
    return marked


# Objects the quota pass reads at a time, least recently read first.
QUOTA_BATCH = 500


def _active_objects() -> Any:
    """Every object an active row references, once: its size and when any group last read it."""
    rows = union_all(
        *(
            select(
                col(table.digest).label("digest"),
                col(table.size).label("size"),
                col(table.read_at).label("read_at"),
            ).where(table.status == CacheStatus.DEFAULT)
            for table in TABLES
        )
    ).subquery()
    return (
        select(
            rows.c.digest,
            func.max(rows.c.size).label("size"),
            func.max(rows.c.read_at).label("read_at"),
        )
        .group_by(rows.c.digest)
        .subquery()
    )


async def mark_over_quota(session: AsyncSession, max_bytes: int) -> int:
    """While the objects active rows reference exceed `max_bytes`, the least recently read
    objects' rows (of every group) → pending_destruction; returns how many objects.

    The database sums and orders the objects; this reads them a batch at a time (keyset on
    last read and digest, so rows it could not mark are not read again), never all at once."""
    objects = _active_objects()
    total = (await session.exec(select(func.coalesce(func.sum(objects.c.size), 0)))).one()
    excess = int(total) - max_bytes
    evicted = 0
    after: tuple[datetime, str] | None = None
    while excess > 0:
        query = select(objects.c.digest, objects.c.size, objects.c.read_at)
        if after is not None:
            query = query.where(tuple_(objects.c.read_at, objects.c.digest) > after)
        batch = (
            await session.exec(
                query.order_by(objects.c.read_at, objects.c.digest).limit(QUOTA_BATCH)
            )
        ).all()
        if not batch:
            break
        for digest, size, read_at in batch:
            if excess <= 0:
                break
            for table in TABLES:
                await session.exec(
                    update(table)
                    .where(
                        col(table.digest) == digest,
                        col(table.status) == CacheStatus.DEFAULT,
                        without_twin(table, CacheStatus.PENDING_DESTRUCTION),
                    )
                    .values(status=CacheStatus.PENDING_DESTRUCTION, updated_at=utcnow())
                )
            excess -= size
            evicted += 1
            after = (read_at, digest)
    return evicted


async def release_abandoned(session: AsyncSession, older_than: timedelta) -> None:
    """Rows a crashed or interrupted cleanup left `processing` are claimed again; those with
    a pending twin are deleted (the twin keeps the object referenced until its own turn)."""
    cutoff = utcnow() - older_than
    for table in TABLES:
        abandoned = (col(table.status) == CacheStatus.PROCESSING, col(table.updated_at) < cutoff)
        await session.exec(
            update(table)
            .where(*abandoned, without_twin(table, CacheStatus.PENDING_DESTRUCTION))
            .values(status=CacheStatus.PENDING_DESTRUCTION, updated_at=utcnow())
        )
        await session.exec(delete(table).where(*abandoned))


async def claim_pending(
    session: AsyncSession, table: CacheTable, limit: int, *, unread_for: timedelta
) -> dict[int, str]:
    """Up to `limit` pending rows unread for `unread_for` → processing (rows other workers
    hold are skipped): their ids and digests.

    A row read lately may belong to a download still streaming its object (or a client
    about to follow a presigned redirect to it); it waits for a later pass.
    """
    claimed = await session.exec(
        select(table.id, table.digest)
        .where(
            table.status == CacheStatus.PENDING_DESTRUCTION,
            col(table.read_at) < utcnow() - unread_for,
            without_twin(table, CacheStatus.PROCESSING),
        )
        .order_by(col(table.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = {row_id: digest for row_id, digest in claimed.all() if row_id is not None}
    if rows:
        await session.exec(
            update(table)
            .where(col(table.id).in_(rows))
            .values(status=CacheStatus.PROCESSING, updated_at=utcnow())
        )
    return rows


async def set_status(
    session: AsyncSession, table: CacheTable, ids: list[int], status: CacheStatus
) -> None:
    """Rows whose twin already has `status` stay `processing` until `release_abandoned`."""
    if ids:
        await session.exec(
            update(table)
            .where(col(table.id).in_(ids), without_twin(table, status))
            .values(status=status, updated_at=utcnow())
        )


async def delete_rows(session: AsyncSession, table: CacheTable, ids: list[int]) -> int:
    if not ids:
        return 0
    result = await session.exec(
        delete(table).where(col(table.id).in_(ids), col(table.status) == CacheStatus.PROCESSING)
    )
    return _rowcount(result)


async def referenced(session: AsyncSession, digest: str) -> bool:
    """Whether any group's row still keeps the object of `digest`."""
    for table in TABLES:
        result = await session.exec(
            select(table.id)
            .where(table.digest == digest, col(table.status).in_(REFERENCING))
            .limit(1)
        )
        if result.first() is not None:
            return True
    return False


# -- ordered listings (web pages) ------------------------------------------------------------

ManifestOrder = Literal["name", "size", "last_pulled", "created"]
MANIFEST_ORDERS: tuple[ManifestOrder, ...] = ("name", "size", "last_pulled", "created")


async def list_manifests_ordered(
    session: AsyncSession,
    group_id: int,
    window: Window,
    *,
    order: ManifestOrder,
    descending: bool,
) -> tuple[list[DependencyProxyManifest], int]:
    """A group's cached manifests sorted by a column the user picked; the id breaks ties, so
    paging through rows that share a value never shows a row twice or skips one."""
    table = DependencyProxyManifest
    columns: dict[ManifestOrder, tuple[Any, ...]] = {
        "name": (col(table.image_name), col(table.file_name)),
        "size": (col(table.size),),
        "last_pulled": (col(table.read_at),),
        "created": (col(table.created_at),),
    }
    keys = [*columns[order], col(table.id)]
    query = (
        select(table)
        .where(table.group_id == group_id)
        .order_by(*(key.desc() if descending else key.asc() for key in keys))
    )
    return await page(session, query, window)
