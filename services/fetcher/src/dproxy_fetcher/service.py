"""The fetcher: everything that talks to upstream registries and fills the cache.

Single flight: concurrent requests for the same uncached manifest or blob share one upstream
GET. Within a process they join the in-flight task; across replicas a lease per digest
decides the leader and the others wait for its completion notice, then read storage.

Upstream failure policy (SPEC §5): a cached tag is served stale (`Warning: 110`) whatever the
upstream fault (timeout, connection error, 5xx, 429, 401/403, open circuit breaker), except an
upstream 404 for a tag upstream last confirmed more than `stale_if_missing` seconds ago (when
that is not 0). Without a copy the fault becomes the client's error (`errors.py`). Upstream
404s (and Docker Hub's 401s for missing repositories) of manifests are remembered for
`negative_cache_seconds`, so a burst of pulls of a missing tag costs one upstream request.
While the rate-limit budget is low (`dproxy_shared.ratelimit`) cached tags are served without
revalidation.

A group with upstream credentials of its own pulls with them (one `UpstreamClient` per
credentials), and is served objects other groups cached only after an upstream HEAD with its
credentials succeeds: caching must not widen what its credentials can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from dproxy_fetcher.errors import from_upstream_error, from_upstream_status
from dproxy_fetcher.fill import BlobFill
from dproxy_fetcher.upstream import Credentials, UpstreamClient, UpstreamError
from dproxy_shared import cache_lookup
from dproxy_shared.coordination import Lease
from dproxy_shared.crypto import SecretBox
from dproxy_shared.fetching import BlobResult, ManifestResult
from dproxy_shared.metrics import (
    COALESCED,
    DIGEST_MISMATCHES,
    NEGATIVE_CACHE_HITS,
    STALE_SERVES,
)
from dproxy_shared.models import utcnow
from dproxy_shared.oci import media_types
from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.errors import ErrorCode, RegistryError
from dproxy_shared.oci.reference import ImageName, Reference
from dproxy_shared.repositories import cache, groups, lifecycle
from dproxy_shared.runtime import Runtime
from dproxy_shared.storage import BlobNotFound
from dproxy_shared.storage.base import put_bytes

log = logging.getLogger(__name__)

# How long a fetched tag's digest is offered to replicas that waited for the same fetch.
RESULT_SECONDS = 10.0
# Upstream answers that mean "no such manifest" (Docker Hub says 401 for missing repositories).
MISSING_STATUSES = (401, 403, 404)


@dataclass(frozen=True, slots=True)
class _Fetched:
    body: bytes
    digest: str
    media_type: str


class _Vanished(Exception):
    """The object another lease holder stood for is not in storage (failed, or cleaned up)."""


class _ManifestFlight:
    def __init__(self) -> None:
        self.group_ids: set[int] = set()
        self.task: asyncio.Task[_Fetched] | None = None


class FetcherService:
    def __init__(self, runtime: Runtime, upstream: UpstreamClient) -> None:
        self._runtime = runtime
        self._upstream = upstream
        # One client per group credentials (token cache keyed by their fingerprint).
        self._clients: dict[str, UpstreamClient] = {}
        self._secrets = SecretBox(runtime.settings)
        self._blob_fills: dict[str, asyncio.Task[BlobFill | None]] = {}
        self._manifest_flights: dict[str, _ManifestFlight] = {}
        # Strong references: the event loop only keeps weak ones to tasks.
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- manifests ---------------------------------------------------------------------

    async def manifest(
        self, *, group_id: int, name: ImageName, reference: Reference, head: bool, token: str
    ) -> ManifestResult:
        repository = name.upstream_repository
        client, own = await self._client(group_id)
        cached = await cache_lookup.find_manifest(
            self._runtime,
            group_id=group_id,
            repository=repository,
            reference=reference,
            adopt=not own,
        )
        # Another group's copy is served only once upstream confirms this group's access.
        if (
            cached is None
            and own
            and reference.digest is not None
            and await self._runtime.store.stat(reference.digest) is not None
        ):
            await self._head_manifest(client, repository, reference)
            cached = await cache_lookup.find_manifest(
                self._runtime, group_id=group_id, repository=repository, reference=reference
            )
        if cached is not None and cached.fresh:
            return cached.result(head=head)
        if cached is not None:
            budget = client.budget
            if budget is not None and await budget.low():
                # Save the upstream's pulls for what is not cached at all.
                STALE_SERVES.labels("ratelimit").inc()
                return cached.result(head=head, stale=True)
            return await self._revalidate(client, group_id, repository, reference, cached, head)
        await self._check_missing(client, repository, reference)
        if head:
            return await self._head_manifest(client, repository, reference)
        fetched = await self._fetch_manifest(client, group_id, repository, reference)
        return ManifestResult(fetched.digest, fetched.media_type, len(fetched.body), fetched.body)

    async def _client(self, group_id: int) -> tuple[UpstreamClient, bool]:
        """The upstream client for the group's pulls, and whether the group has its own
        credentials (then other groups' cached objects need an upstream confirmation)."""
        async with self._runtime.session() as session:
            setting = await groups.proxy_setting(session, group_id)
        if not setting.identity or not setting.secret_encrypted:
            return self._upstream, False
        try:
            secret = self._secrets.decrypt(setting.secret_encrypted)
        except ValueError as exc:
            raise RegistryError(
                ErrorCode.BAD_GATEWAY, f"the group's upstream credentials are unusable: {exc}"
            ) from exc
        credentials = Credentials(setting.identity, secret)
        client = self._clients.get(credentials.fingerprint)
        if client is None:
            client = self._upstream.with_credentials(credentials)
            self._clients[credentials.fingerprint] = client
        return client, True

    async def _revalidate(
        self,
        client: UpstreamClient,
        group_id: int,
        repository: str,
        reference: Reference,
        cached: cache_lookup.CachedManifest,
        head: bool,
    ) -> ManifestResult:
        """HEAD upstream (free on Docker Hub's rate limit); GET only when the tag moved."""
        what = f"{repository}:{reference}"
        try:
            response = await self._head_upstream_manifest(client, repository, reference)
        except UpstreamError as exc:
            STALE_SERVES.labels(exc.kind).inc()
            log.info("serving %s stale: %s", what, exc)
            return cached.result(head=head, stale=True)
        if response.status_code == 404 and self._gone_too_long(cached):
            await self._remember_missing(client, repository, reference)
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {what} no longer exists upstream",
            )
        if response.status_code != 200:
            STALE_SERVES.labels(str(response.status_code)).inc()
            log.info("serving %s stale: upstream HEAD answered %s", what, response.status_code)
            return cached.result(head=head, stale=True)
        upstream_digest = response.headers.get("docker-content-digest")
        upstream_type = media_types.normalize(response.headers.get("content-type"))
        if upstream_digest == cached.row.digest and upstream_type == cached.row.content_type:
            async with self._runtime.session() as session:
                assert cached.row.id is not None
                await cache.touch_manifest(session, cached.row.id, validated=True)
            return cached.result(head=head)
        if head:
            # The tag moved; a HEAD is answered from upstream's HEAD, without a (counted) GET.
            return _head_result(response, what)
        try:
            fetched = await self._fetch_manifest(client, group_id, repository, reference)
        except RegistryError as exc:
            if exc.status < 429:
                raise
            # The tag moved but its new manifest cannot be had now: the old one still works.
            STALE_SERVES.labels(exc.code.value.lower()).inc()
            log.info("serving %s stale: fetching the moved tag failed: %s", what, exc)
            return cached.result(head=head, stale=True)
        return ManifestResult(fetched.digest, fetched.media_type, len(fetched.body), fetched.body)

    def _gone_too_long(self, cached: cache_lookup.CachedManifest) -> bool:
        """`stale_if_missing`: 0 keeps serving a tag upstream deleted; N > 0 stops N seconds
        after upstream last confirmed it."""
        limit = self._runtime.settings.stale_if_missing
        return limit > 0 and utcnow() - cached.row.validated_at > timedelta(seconds=limit)

    def _missing_key(self, client: UpstreamClient, repository: str, reference: Reference) -> str:
        who = client.credentials_fingerprint
        return f"upstream-missing:{client.host}/{who}/{repository}@{reference}"

    async def _check_missing(
        self, client: UpstreamClient, repository: str, reference: Reference
    ) -> None:
        """Answer from the negative cache when upstream just said the manifest does not exist."""
        if self._runtime.settings.negative_cache_seconds <= 0:
            return
        key = self._missing_key(client, repository, reference)
        if await self._runtime.coordination.cache.get(key):
            NEGATIVE_CACHE_HITS.inc()
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {repository}:{reference} not found upstream (checked recently)",
            )

    async def _remember_missing(
        self, client: UpstreamClient, repository: str, reference: Reference
    ) -> None:
        seconds = self._runtime.settings.negative_cache_seconds
        if seconds > 0:
            await self._runtime.coordination.cache.set(
                self._missing_key(client, repository, reference), "1", seconds
            )

    async def _head_manifest(
        self, client: UpstreamClient, repository: str, reference: Reference
    ) -> ManifestResult:
        what = f"manifest {repository}:{reference}"
        try:
            response = await self._head_upstream_manifest(client, repository, reference)
        except UpstreamError as exc:
            raise from_upstream_error(exc, what) from exc
        if response.status_code != 200:
            if response.status_code in MISSING_STATUSES:
                await self._remember_missing(client, repository, reference)
            raise from_upstream_status(response, what, ErrorCode.MANIFEST_UNKNOWN)
        return _head_result(response, what)

    async def _head_upstream_manifest(
        self, client: UpstreamClient, repository: str, reference: Reference
    ) -> httpx.Response:
        return await client.send(
            "HEAD",
            repository,
            f"manifests/{reference}",
            headers={"Accept": media_types.UPSTREAM_ACCEPT},
        )

    async def _fetch_manifest(
        self, client: UpstreamClient, group_id: int, repository: str, reference: Reference
    ) -> _Fetched:
        key = f"{client.host}/{client.credentials_fingerprint}/{repository}@{reference}"
        flight = self._manifest_flights.get(key)
        if flight is None:
            flight = _ManifestFlight()
            self._manifest_flights[key] = flight
            flight.task = asyncio.create_task(
                self._manifest_flight(client, key, flight, repository, reference)
            )
            self._keep(flight.task)
        else:
            COALESCED.labels("manifest").inc()
        flight.group_ids.add(group_id)
        assert flight.task is not None
        # Shielded: a client that leaves must not cancel the fetch the others are waiting on.
        return await asyncio.shield(flight.task)

    async def _manifest_flight(
        self,
        client: UpstreamClient,
        key: str,
        flight: _ManifestFlight,
        repository: str,
        reference: Reference,
    ) -> _Fetched:
        try:
            fetched = await self._manifest_once(client, key, repository, reference)
            async with self._runtime.session() as session:
                await lifecycle.lock_digest(session, fetched.digest, shared=True)
                for group_id in flight.group_ids:
                    await cache.save_manifest(
                        session,
                        group_id=group_id,
                        image_name=repository,
                        file_name=str(reference),
                        digest=fetched.digest,
                        content_type=fetched.media_type,
                        size=len(fetched.body),
                    )
            digest = Digest.parse(fetched.digest)
            if await self._runtime.store.stat(digest) is None:
                # A cleanup removed the object before these rows existed: store it again.
                await put_bytes(self._runtime.store, fetched.body, digest)
            return fetched
        finally:
            self._manifest_flights.pop(key, None)

    async def _manifest_once(
        self, client: UpstreamClient, key: str, repository: str, reference: Reference
    ) -> _Fetched:
        """Download the manifest, or take what another replica just downloaded.

        The leader leaves `digest media-type` under `manifest-result:<key>` for a little while
        before it releases its lease, so a replica that waited never fetches it a second time.
        """
        coordination = self._runtime.coordination
        result_key = f"manifest-result:{key}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._runtime.settings.upstream_read_timeout * 2
        while True:
            if (recent := await coordination.cache.get(result_key)) is not None:
                digest, _, media_type = recent.partition(" ")
                with contextlib.suppress(BlobNotFound):
                    body = await self._runtime.store.read_bytes(Digest.parse(digest))
                    COALESCED.labels("manifest").inc()
                    return _Fetched(body, digest, media_type)
            lease = await coordination.locks.try_acquire(
                f"manifest:{key}", self._runtime.settings.fill_lease_seconds
            )
            if lease is not None:
                break
            if loop.time() > deadline:
                raise RegistryError(ErrorCode.GATEWAY_TIMEOUT, f"{key}: waited too long")
            await coordination.notifier.wait(f"manifest:{key}", timeout=0.5)
        try:
            fetched = await self._download_manifest(client, repository, reference)
            await put_bytes(self._runtime.store, fetched.body, Digest.parse(fetched.digest))
            await coordination.cache.set(
                result_key, f"{fetched.digest} {fetched.media_type}", ttl=RESULT_SECONDS
            )
        finally:
            await lease.release()
            await coordination.notifier.publish(f"manifest:{key}", "done")
        return fetched

    async def _download_manifest(
        self, client: UpstreamClient, repository: str, reference: Reference
    ) -> _Fetched:
        what = f"manifest {repository}:{reference}"
        limit = self._runtime.settings.manifest_max_bytes
        try:
            response = await client.send(
                "GET",
                repository,
                f"manifests/{reference}",
                headers={"Accept": media_types.UPSTREAM_ACCEPT},
                stream=True,
            )
            try:
                if response.status_code != 200:
                    if response.status_code in MISSING_STATUSES:
                        await self._remember_missing(client, repository, reference)
                    raise from_upstream_status(response, what, ErrorCode.MANIFEST_UNKNOWN)
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > limit:
                        raise RegistryError(
                            ErrorCode.MANIFEST_INVALID, f"{what} is larger than {limit} bytes"
                        )
            finally:
                await response.aclose()
        except UpstreamError as exc:
            raise from_upstream_error(exc, what) from exc
        data = bytes(body)
        algorithm = reference.digest.algorithm if reference.digest else "sha256"
        actual = Digest.of(data, algorithm)
        claimed = response.headers.get("docker-content-digest")
        expected = reference.digest or (Digest.parse(claimed) if claimed else actual)
        if actual != expected:
            DIGEST_MISMATCHES.inc()
            raise RegistryError(
                ErrorCode.BAD_GATEWAY,
                f"upstream sent {what} with digest {actual}, expected {expected}; not cached",
            )
        media_type = media_types.normalize(response.headers.get("content-type"))
        if media_type not in media_types.MANIFEST_TYPES:
            media_type = media_types.sniff(data) or media_type
        if not media_type:
            raise RegistryError(ErrorCode.BAD_GATEWAY, f"upstream sent {what} without a type")
        return _Fetched(data, str(actual), media_type)

    # -- blobs ---------------------------------------------------------------------------

    async def blob(
        self, *, group_id: int, name: ImageName, digest: Digest, head: bool, token: str
    ) -> BlobResult:
        key = str(digest)
        repository = name.upstream_repository
        client, own = await self._client(group_id)
        if own:
            # A group with its own credentials reads what others cached (or are fetching)
            # only after upstream confirms, with its credentials, that it may.
            size = await cache_lookup.find_blob(
                self._runtime, group_id=group_id, digest=digest, adopt=False
            )
            if size is not None:
                return BlobResult(key, size, None if head else self._runtime.store.read(digest))
            if key in self._blob_fills or await self._runtime.store.stat(digest) is not None:
                confirmed = await self._head_blob(client, repository, digest)
                if head:
                    return confirmed
        if not head and (opening := self._blob_fills.get(key)) is not None:
            COALESCED.labels("blob").inc()
            with contextlib.suppress(_Vanished):
                return await self._follow(opening, group_id, digest)
        size = await cache_lookup.find_blob(self._runtime, group_id=group_id, digest=digest)
        if size is not None:
            return BlobResult(key, size, None if head else self._runtime.store.read(digest))
        if head:
            return await self._head_blob(client, repository, digest)
        # Twice at most: a cleanup that held the digest's lease may have deleted the object
        # this request waited for; then it is fetched again rather than answered with a 502.
        for _ in range(2):
            opening = self._blob_fills.get(key)
            if opening is None:
                # The upstream request runs in its own task: if this client leaves while it
                # connects, the followers that joined meanwhile still get their blob.
                opening = asyncio.create_task(self._open_fill(client, repository, digest))
                self._blob_fills[key] = opening
                self._keep(opening)
            else:
                COALESCED.labels("blob").inc()
            with contextlib.suppress(_Vanished):
                return await self._follow(opening, group_id, digest)
        raise RegistryError(ErrorCode.BAD_GATEWAY, f"blob {digest}: the fetch failed")

    async def _follow(
        self, opening: asyncio.Task[BlobFill | None], group_id: int, digest: Digest
    ) -> BlobResult:
        fill = await asyncio.shield(opening)
        if fill is None:  # another replica (or a cleanup) held the lease: read storage
            size = await cache_lookup.find_blob(self._runtime, group_id=group_id, digest=digest)
            if size is None:
                raise _Vanished
            return BlobResult(str(digest), size, self._runtime.store.read(digest))
        if fill.failed:  # known before any byte is sent: answer with a proper error
            raise RegistryError(ErrorCode.BAD_GATEWAY, f"blob {digest}: the upstream fetch failed")
        fill.group_ids.add(group_id)
        return BlobResult(str(digest), fill.size, fill.stream())

    async def _head_blob(
        self, client: UpstreamClient, repository: str, digest: Digest
    ) -> BlobResult:
        what = f"blob {digest}"
        try:
            response = await client.send("HEAD", repository, f"blobs/{digest}")
        except UpstreamError as exc:
            raise from_upstream_error(exc, what) from exc
        if response.status_code != 200:
            raise from_upstream_status(response, what, ErrorCode.BLOB_UNKNOWN)
        length = response.headers.get("content-length", "")
        return BlobResult(str(digest), int(length) if length.isdigit() else None, None)

    async def _open_fill(
        self, client: UpstreamClient, repository: str, digest: Digest
    ) -> BlobFill | None:
        """Become the one downloader of `digest` (or learn that another replica did it)."""
        key = str(digest)
        try:
            lease = await self._acquire_fill_lease(digest)
            if lease is None:
                self._blob_fills.pop(key, None)
                return None
            try:
                fill = await self._request_blob(client, repository, digest)
            except BaseException:
                await lease.release()
                raise
        except BaseException:
            self._blob_fills.pop(key, None)
            raise
        self._keep(asyncio.create_task(self._run_fill(fill, lease)))
        return fill

    async def _acquire_fill_lease(self, digest: Digest) -> Lease | None:
        """A lease on the digest, or None once another replica has stored it.

        A leader that crashes stops renewing its lease, so it expires and a waiter takes over.
        """
        coordination = self._runtime.coordination
        deadline = asyncio.get_running_loop().time() + self._runtime.settings.fill_timeout
        while asyncio.get_running_loop().time() < deadline:
            lease = await coordination.locks.try_acquire(
                f"fill:{digest}", self._runtime.settings.fill_lease_seconds
            )
            if lease is not None:
                if await self._runtime.store.stat(digest) is None:
                    return lease
                await lease.release()
                return None
            if await self._runtime.store.stat(digest) is not None:
                return None
            await coordination.notifier.wait(f"filled:{digest}", timeout=1.0)
        raise RegistryError(ErrorCode.GATEWAY_TIMEOUT, f"blob {digest}: waited too long")

    async def _request_blob(
        self, client: UpstreamClient, repository: str, digest: Digest
    ) -> BlobFill:
        what = f"blob {digest}"
        try:
            response = await client.send("GET", repository, f"blobs/{digest}", stream=True)
        except UpstreamError as exc:
            raise from_upstream_error(exc, what) from exc
        try:
            if response.status_code != 200:
                raise from_upstream_status(response, what, ErrorCode.BLOB_UNKNOWN)
            length = response.headers.get("content-length", "")
            writer = await self._runtime.store.writer(digest)
        except BaseException:
            await response.aclose()
            raise
        return BlobFill(digest, int(length) if length.isdigit() else None, writer, response)

    async def _run_fill(self, fill: BlobFill, lease: Lease) -> None:
        async def record(fill: BlobFill) -> None:
            async with self._runtime.session() as session:
                for group_id in fill.group_ids:
                    await cache.save_blob(
                        session, group_id=group_id, digest=str(fill.digest), size=fill.written
                    )

        try:
            settings = self._runtime.settings
            await fill.run(
                lease=lease,
                lease_seconds=settings.fill_lease_seconds,
                timeout=settings.fill_timeout,
                on_commit=record,
            )
        finally:
            self._blob_fills.pop(str(fill.digest), None)
            await lease.release()
            await self._runtime.coordination.notifier.publish(
                f"filled:{fill.digest}", "ok" if fill.succeeded else "failed"
            )

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _head_result(response: httpx.Response, what: str) -> ManifestResult:
    digest = response.headers.get("docker-content-digest")
    media_type = media_types.normalize(response.headers.get("content-type"))
    length = response.headers.get("content-length", "")
    if not digest or not media_type or not length.isdigit():
        raise RegistryError(ErrorCode.BAD_GATEWAY, f"upstream HEAD of {what} was incomplete")
    return ManifestResult(str(Digest.parse(digest)), media_type, int(length), None)
