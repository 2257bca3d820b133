"""Reading the cache: what the registry serves without asking the fetcher, and what the
fetcher checks before going upstream. A hit bumps `read_at` (GitLab forgets to for blobs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_shared.fetching import ManifestResult
from dproxy_shared.models import DependencyProxyManifest, utcnow
from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.reference import Reference
from dproxy_shared.repositories import cache, lifecycle
from dproxy_shared.runtime import Runtime
from dproxy_shared.storage import BlobNotFound


@dataclass(frozen=True, slots=True)
class CachedManifest:
    row: DependencyProxyManifest
    body: bytes
    fresh: bool  # servable without asking upstream

    def result(self, *, head: bool, stale: bool = False) -> ManifestResult:
        return ManifestResult(
            digest=self.row.digest,
            media_type=self.row.content_type,
            size=len(self.body),
            body=None if head else self.body,
            stale=stale,
        )


async def find_manifest(
    runtime: Runtime, *, group_id: int, repository: str, reference: Reference, adopt: bool = True
) -> CachedManifest | None:
    """The group's cached manifest. Digest references are always fresh (content-addressed);
    tags are fresh for `manifest_revalidate_after` seconds after upstream last confirmed them.

    A digest another group already cached is adopted for this group without an upstream call
    (unless `adopt` is False: a group with its own upstream credentials confirms access first).
    """
    async with runtime.session() as session:
        row = await cache.find_manifest(
            session, group_id=group_id, image_name=repository, file_name=str(reference)
        )
        if row is None and reference.digest is not None and adopt:
            await lifecycle.lock_digest(session, str(reference.digest), shared=True)
            row = await _adopt_manifest(runtime, session, group_id, repository, reference.digest)
        if row is None:
            return None
        # Read under the digest's shared lock: the cleanup cannot delete it meanwhile.
        await lifecycle.lock_digest(session, row.digest, shared=True)
        try:
            body = await runtime.store.read_bytes(Digest.parse(row.digest))
        except BlobNotFound:
            return None  # the object was cleaned up under the row: fetch it again
        max_age = timedelta(seconds=runtime.settings.manifest_revalidate_after)
        fresh = reference.digest is not None or utcnow() - row.validated_at < max_age
        if fresh:
            assert row.id is not None
            await cache.touch_manifest(session, row.id)
        return CachedManifest(row, body, fresh)


async def _adopt_manifest(
    runtime: Runtime, session: AsyncSession, group_id: int, repository: str, digest: Digest
) -> DependencyProxyManifest | None:
    content_type = await cache.manifest_content_type(session, str(digest))
    size = await runtime.store.stat(digest) if content_type else None
    if content_type is None or size is None:
        return None
    await cache.save_manifest(
        session,
        group_id=group_id,
        image_name=repository,
        file_name=str(digest),
        digest=str(digest),
        content_type=content_type,
        size=size,
    )
    return await cache.find_manifest(
        session, group_id=group_id, image_name=repository, file_name=str(digest)
    )


async def find_blob(
    runtime: Runtime, *, group_id: int, digest: Digest, adopt: bool = True
) -> int | None:
    """The size of a cached blob the group may read, or None on a miss.

    Objects are shared by all groups; a group that has no row yet for an object that is
    already stored gets one now, without an upstream download (unless `adopt` is False).
    """
    if await runtime.store.stat(digest) is None:
        return None
    async with runtime.session() as session:
        # The row is committed under the digest's shared lock before the object is checked
        # again: from then on the cleanup sees the row and keeps the object (lifecycle.py).
        await lifecycle.lock_digest(session, str(digest), shared=True)
        row = await cache.find_blob(session, group_id=group_id, digest=str(digest))
        if row is not None and row.id is not None:
            await cache.touch_blob(session, row.id)
            size: int | None = row.size
        elif not adopt:
            return None
        else:
            size = await runtime.store.stat(digest)
            if size is not None:
                await cache.save_blob(session, group_id=group_id, digest=str(digest), size=size)
    if size is None or await runtime.store.stat(digest) is None:
        return None  # cleaned up meanwhile: a miss, fetched again
    return size
