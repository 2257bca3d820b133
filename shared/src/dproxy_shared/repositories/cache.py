"""Cached manifests and blobs: a group's rows pointing at content-addressed objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.models import (
    CacheStatus,
    DependencyProxyBlob,
    DependencyProxyManifest,
    utcnow,
)
from dproxy_shared.repositories import lifecycle
from dproxy_shared.repositories._upsert import upsert


async def find_manifest(
    session: AsyncSession, *, group_id: int, image_name: str, file_name: str
) -> DependencyProxyManifest | None:
    result = await session.exec(
        select(DependencyProxyManifest).where(
            DependencyProxyManifest.group_id == group_id,
            DependencyProxyManifest.image_name == image_name,
            DependencyProxyManifest.file_name == file_name,
            DependencyProxyManifest.status == CacheStatus.DEFAULT,
        )
    )
    return result.first()


async def manifest_content_type(session: AsyncSession, digest: str) -> str | None:
    """The media type any group recorded for this manifest digest."""
    result = await session.exec(
        select(DependencyProxyManifest.content_type)
        .where(DependencyProxyManifest.digest == digest)
        .limit(1)
    )
    return result.first()


async def save_manifest(
    session: AsyncSession,
    *,
    group_id: int,
    image_name: str,
    file_name: str,
    digest: str,
    content_type: str,
    size: int,
) -> None:
    now = utcnow()
    await upsert(
        session,
        DependencyProxyManifest,
        {
            "group_id": group_id,
            "image_name": image_name,
            "file_name": file_name,
            "digest": digest,
            "content_type": content_type,
            "size": size,
            "status": CacheStatus.DEFAULT,
            "created_at": now,
            "updated_at": now,
            "read_at": now,
            "validated_at": now,
        },
        conflict=("group_id", "image_name", "file_name", "status"),
        update=("digest", "content_type", "size", "updated_at", "read_at", "validated_at"),
    )


async def touch_manifest(
    session: AsyncSession, manifest_id: int, *, validated: bool = False
) -> None:
    now = utcnow()
    values: dict[str, datetime] = {"read_at": now}
    if validated:
        values["validated_at"] = now
    await session.exec(
        update(DependencyProxyManifest)
        .where(col(DependencyProxyManifest.id) == manifest_id)
        .values(**values)
    )


async def find_blob(
    session: AsyncSession, *, group_id: int, digest: str
) -> DependencyProxyBlob | None:
    result = await session.exec(
        select(DependencyProxyBlob).where(
            DependencyProxyBlob.group_id == group_id,
            DependencyProxyBlob.digest == digest,
            DependencyProxyBlob.status == CacheStatus.DEFAULT,
        )
    )
    return result.first()


async def save_blob(session: AsyncSession, *, group_id: int, digest: str, size: int) -> None:
    now = utcnow()
    await upsert(
        session,
        DependencyProxyBlob,
        {
            "group_id": group_id,
            "digest": digest,
            "size": size,
            "status": CacheStatus.DEFAULT,
            "created_at": now,
            "updated_at": now,
            "read_at": now,
        },
        conflict=("group_id", "digest", "status"),
        update=("size", "read_at"),
    )


async def touch_blob(session: AsyncSession, blob_id: int) -> None:
    await session.exec(
        update(DependencyProxyBlob)
        .where(col(DependencyProxyBlob.id) == blob_id)
        .values(read_at=utcnow())
    )


async def purge_in_progress(session: AsyncSession, group_id: int) -> bool:
    """A purge runs until cleanup has processed every row it marked."""
    marked = (CacheStatus.PENDING_DESTRUCTION, CacheStatus.PROCESSING)
    for table in (DependencyProxyManifest, DependencyProxyBlob):
        result = await session.exec(
            select(table.id)
            .where(table.group_id == group_id, col(table.status).in_(marked))
            .limit(1)
        )
        if result.first() is not None:
            return True
    return False


async def mark_group_for_destruction(session: AsyncSession, group_id: int) -> int:
    """Every active row of the group → pending_destruction; returns how many."""
    marked = 0
    for table in (DependencyProxyManifest, DependencyProxyBlob):
        result = await session.exec(
            update(table)
            .where(
                col(table.group_id) == group_id,
                col(table.status) == CacheStatus.DEFAULT,
                lifecycle.without_twin(table, CacheStatus.PENDING_DESTRUCTION),
            )
            .values(status=CacheStatus.PENDING_DESTRUCTION, updated_at=utcnow())
        )
        marked += cast(CursorResult[Any], result).rowcount or 0
    return marked
