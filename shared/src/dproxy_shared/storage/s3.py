"""`BlobStore` on S3 (MinIO, SeaweedFS, AWS, ...) through the minio SDK.

The SDK is synchronous, so every call runs in a worker thread and the event loop never waits
on the network. Objects use the shared layout (`base.blob_key`) under an optional prefix.

An upload is written to a spool file first: an anonymous temporary file in `spool_dir`
(already unlinked, so a crash leaves nothing behind) that followers read while it grows. The
spool is then copied to S3 without ever holding more than one part in memory:

* When the writer is told the digest it expects (`writer(expected)`, which a fill knows),
  parts go up in the background as soon as the spool holds a full one, as a multipart
  upload straight to the blob's final key. S3 shows nothing for an uncompleted multipart
  upload, and `commit` completes it only after the digest matched; a mismatch or an abort
  aborts it. So there is neither a temporary object nor a server-side copy.
* Without that hint the key is unknown until `commit`, which then uploads the spool.
* A blob smaller than one part is a single PutObject at commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import weakref
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error
from urllib3.response import BaseHTTPResponse

from dproxy_shared.oci.digest import Digest, Hasher
from dproxy_shared.storage.base import CHUNK_SIZE, BlobNotFound, DigestMismatch, blob_key

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PARTS = 10_000  # S3's ceiling: with 16 MiB parts a blob may reach 156 GiB
# The SDK names a 404 on HEAD "NoSuchKey"; some servers answer a GET with "NotFound".
_MISSING = frozenset({"NoSuchKey", "NotFound"})


class BucketUnavailable(Exception):
    """The configured bucket does not exist (or these credentials cannot see it)."""


class S3BlobStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool,
        spool_dir: Path,
        region: str | None = None,
        prefix: str = "",
        public_endpoint: str | None = None,
        public_secure: bool | None = None,
        part_size: int = 16 * MiB,
        max_connections: int = 64,
    ) -> None:
        """`endpoint` is `host:port`; `public_endpoint` (same form) is the address clients use
        for presigned URLs when it differs from ours (an ingress in front of MinIO)."""
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.spool_dir = spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._region = region
        self._credentials = (access_key, secret_key)
        self._http = _pool(secure, maxsize=max_connections, connect=10, read=120, retries=5)
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        # Readiness probes must answer within a second or two, not after the main client's
        # retries and two-minute read timeout.
        self._probe_http = _pool(secure, maxsize=1, connect=2, read=3, retries=0)
        self._probe = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._probe_http,
        )
        self._public = (
            public_endpoint or endpoint,
            secure if public_secure is None else public_secure,
        )
        self._presigner: Minio | None = None

    def key(self, digest: Digest) -> str:
        return self.prefix + blob_key(digest)

    # ---- reading --------------------------------------------------------------------------
    async def stat(self, digest: Digest) -> int | None:
        return await self.stat_key(self.key(digest))

    async def stat_key(self, key: str) -> int | None:
        try:
            found = await asyncio.to_thread(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return None
            raise
        return found.size

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        key = self.key(digest)
        if length == 0:
            # An S3 range cannot be empty; only the object's existence is left to report.
            if await self.stat_key(key) is None:
                raise BlobNotFound(str(digest))
            return
        response = await self._get(key, offset, length)
        if response is None:
            return
        body = _Body(response)
        try:
            while chunk := await body.read(CHUNK_SIZE):
                yield chunk
        finally:
            await body.close()

    async def read_bytes(self, digest: Digest) -> bytes:
        response = await self._get(self.key(digest), 0, None)
        assert response is not None  # a whole-object GET has no range to miss
        return await asyncio.to_thread(_read_all, response)

    async def _get(self, key: str, offset: int, length: int | None) -> BaseHTTPResponse | None:
        """The GET response, or None for a range that starts at or past the end."""
        try:
            return await asyncio.to_thread(
                self.client.get_object, self.bucket, key, offset=offset, length=length or 0
            )
        except S3Error as exc:
            if exc.code in _MISSING:
                raise BlobNotFound(key) from exc
            if exc.code != "InvalidRange":
                raise
        # 416: the range is past the end, which is an empty read, or the object is gone.
        if await self.stat_key(key) is None:
            raise BlobNotFound(key)
        return None

    # ---- writing and deleting -------------------------------------------------------------
    async def writer(self, expected: Digest | None = None) -> S3BlobWriter:
        """A new upload. With `expected`, parts stream to S3 while the blob is written."""
        spool = await asyncio.to_thread(_new_spool, self.spool_dir)
        return S3BlobWriter(self, spool, None if expected is None else self.key(expected))

    async def delete(self, digest: Digest) -> bool:
        key = self.key(digest)
        # DeleteObject succeeds whether or not the object exists; the answer needs a HEAD.
        if await self.stat_key(key) is None:
            return False
        await asyncio.to_thread(self.client.remove_object, self.bucket, key)
        return True

    # ---- redirects, health, lifecycle -----------------------------------------------------
    async def redirect_url(self, digest: Digest, expires: timedelta) -> str:
        """A presigned GET URL for the blob, valid for `expires` (at most 7 days)."""
        presigner = await self._get_presigner()
        return presigner.presigned_get_object(self.bucket, self.key(digest), expires=expires)

    async def _get_presigner(self) -> Minio:
        if self._presigner is None:
            # Presigning is offline once the region is known. Learn it through our own
            # endpoint so the public one (maybe unreachable from here) is never called.
            region = self._region or await asyncio.to_thread(self.client._get_region, self.bucket)
            endpoint, secure = self._public
            access_key, secret_key = self._credentials
            self._presigner = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=self._probe_http,
            )
        return self._presigner

    async def check(self) -> None:
        if not await asyncio.to_thread(self._probe.bucket_exists, self.bucket):
            raise BucketUnavailable(f"bucket {self.bucket!r} does not exist")

    async def close(self) -> None:
        # Open writers are their owners' to abort (a fill does so when it is cancelled); an
        # unfinished multipart upload left by a crash is for a lifecycle rule to reap.
        self._http.clear()
        self._probe_http.clear()


def _pool(
    secure: bool, *, maxsize: int, connect: float, read: float, retries: int
) -> urllib3.PoolManager:
    """Like the SDK's default pool, with bounded timeouts and room for concurrent streams."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect, read=read),
        maxsize=maxsize,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        )
        if retries
        else False,
    )


def _read_all(response: BaseHTTPResponse) -> bytes:
    try:
        return response.read(decode_content=False)
    finally:
        response.close()
        response.release_conn()


class _Body:
    """A streaming GET body read chunk by chunk in worker threads.

    http.client is not thread-safe: `close` waits for a read still running in its thread
    (one whose awaiting task was cancelled) before closing the connection under it.
    """

    def __init__(self, response: BaseHTTPResponse) -> None:
        self._response = response
        self._pending: asyncio.Future[bytes] | None = None

    async def read(self, size: int) -> bytes:
        self._pending = asyncio.ensure_future(
            asyncio.to_thread(self._response.read, size, decode_content=False)
        )
        return await asyncio.shield(self._pending)

    async def close(self) -> None:
        pending = self._pending
        if pending is not None:
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: an error here is the reader's, not ours
        await asyncio.to_thread(self._release)

    def _release(self) -> None:
        self._response.close()
        self._response.release_conn()


class S3BlobWriter:
    def __init__(self, store: S3BlobStore, spool: BinaryIO, key: str | None) -> None:
        self._store = store
        self._spool: BinaryIO | None = spool
        # Followers read the spool, not S3, even after commit (a fill aborts its writer in a
        # `finally` while followers still stream): it lives until an abort before commit or
        # until the writer is dropped. Being unlinked, its space goes with its descriptor.
        self._close_spool = weakref.finalize(self, spool.close)
        self._key = key  # where parts go; None until known
        self._hasher: Hasher = Digest("sha256", "").hasher()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._uploaded = 0  # bytes of the spool already in parts
        self._pump: asyncio.Task[None] | None = None
        self._pump_error: BaseException | None = None
        self._stopping = False
        self._state = "open"  # -> "committed" | "aborted"
        self._spool_lock = asyncio.Lock()  # never close the spool under a follower's read

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        if self._state != "open":
            raise RuntimeError("write after commit or abort")
        if self._pump_error is not None:
            raise self._pump_error
        if not chunk:
            return
        await asyncio.to_thread(self._write_sync, chunk)
        self._size += len(chunk)
        if self._key is not None and self._size - self._uploaded >= self._store.part_size:
            self._start_pump()

    def _write_sync(self, chunk: bytes) -> None:
        assert self._spool is not None
        view = memoryview(chunk)
        while view:
            written = self._spool.write(view)
            view = view[written or 0 :]
        self._hasher.update(chunk)

    async def read_written(self, offset: int, max_bytes: int) -> bytes:
        available = self._size - offset
        if available <= 0 or max_bytes <= 0:
            return b""
        wanted = min(max_bytes, available)
        async with self._spool_lock:
            if self._spool is None:
                raise BlobNotFound("upload was discarded")
            return await asyncio.to_thread(_pread, self._spool, offset, wanted)

    # ---- parts ----------------------------------------------------------------------------
    def _start_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump())

    async def _run_pump(self) -> None:
        try:
            await self._upload_parts(final=False)
        except Exception as exc:
            # Reported by the next write() or by commit(); the fill then fails and aborts.
            self._pump_error = exc

    async def _upload_parts(self, *, final: bool) -> None:
        """Send the spool to S3 in parts: the full ones, and with `final` the rest too."""
        part_size = self._store.part_size
        while not self._stopping:
            remaining = self._size - self._uploaded
            if remaining < part_size and not (final and remaining > 0):
                return
            if len(self._parts) >= MAX_PARTS:
                raise ValueError(f"blob larger than {MAX_PARTS} parts of {part_size} bytes")
            await self._upload_part(min(part_size, remaining))

    async def _upload_part(self, length: int) -> None:
        store, key = self._store, self._key
        assert key is not None and self._spool is not None
        if self._upload_id is None:
            self._upload_id = await asyncio.to_thread(
                store.client._create_multipart_upload, store.bucket, key, {}
            )
        data = await asyncio.to_thread(_pread, self._spool, self._uploaded, length)
        number = len(self._parts) + 1
        etag = await asyncio.to_thread(
            store.client._upload_part, store.bucket, key, data, None, self._upload_id, number
        )
        self._parts.append(Part(number, etag))
        self._uploaded += len(data)

    async def _stop_pump(self) -> None:
        """Let a part in flight finish (S3 keeps a part that lands after an abort)."""
        pump = self._pump
        if pump is not None:
            await asyncio.wait([pump])

    async def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        self._parts, self._uploaded = [], 0
        if upload_id is None or self._key is None:
            return
        try:
            await asyncio.to_thread(
                self._store.client._abort_multipart_upload,
                self._store.bucket,
                self._key,
                upload_id,
            )
        except Exception as exc:
            # Its parts stay billed until a lifecycle rule (AbortIncompleteMultipartUpload)
            # reaps them; nothing is visible, so this is a leak, not an error to raise.
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, self._key, exc)

    # ---- commit and abort -----------------------------------------------------------------
    async def commit(self, expected: Digest) -> None:
        if self._state != "open":
            raise RuntimeError("commit after commit or abort")
        await self._stop_pump()
        if self._pump_error is not None:
            await self.abort()
            raise self._pump_error
        actual = await asyncio.to_thread(self._final_hash, expected.algorithm)
        if actual != expected.hex:
            await self.abort()
            raise DigestMismatch(expected, actual, self._size)
        try:
            await self._publish(self._store.key(expected))
        except BaseException:
            await self.abort()
            raise
        self._state = "committed"

    def _final_hash(self, algorithm: str) -> str:
        # sha256 is what registries use: hashed while writing. Anything else: read it back.
        if algorithm == "sha256":
            return self._hasher.hexdigest()
        assert self._spool is not None
        hasher = Digest(algorithm, "").hasher()
        for offset in range(0, self._size, CHUNK_SIZE):
            hasher.update(_pread(self._spool, offset, min(CHUNK_SIZE, self._size - offset)))
        return hasher.hexdigest()

    async def _publish(self, key: str) -> None:
        if self._key != key:
            # Parts went to the key the writer was opened for; this commit names another.
            await self._abort_upload()
            self._key = key
        if await self._store.stat_key(key) == self._size:
            # Same digest, same bytes, verified when it was committed. Replacing it could
            # pull chunks from under a read in flight, so keep the object that is there.
            await self._abort_upload()
        elif self._upload_id is None and self._size <= self._store.part_size:
            await self._put_whole(key)
        else:
            await self._upload_parts(final=True)
            store = self._store
            assert self._upload_id is not None
            await asyncio.to_thread(
                store.client._complete_multipart_upload,
                store.bucket,
                key,
                self._upload_id,
                self._parts,
            )
            self._upload_id = None

    async def _put_whole(self, key: str) -> None:
        assert self._spool is not None
        data = await asyncio.to_thread(_pread, self._spool, 0, self._size)
        await asyncio.to_thread(
            self._store.client._put_object,
            self._store.bucket,
            key,
            data,
            {"Content-Type": "application/octet-stream"},
        )

    async def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._stopping = True
        await self._stop_pump()
        await self._abort_upload()
        async with self._spool_lock:
            self._spool = None
            await asyncio.to_thread(self._close_spool)


def _new_spool(directory: Path) -> BinaryIO:
    # Unbuffered: a follower's pread must see every byte write() has returned for.
    # The writer owns it: closed by abort() or when the writer is dropped.
    return tempfile.TemporaryFile(dir=directory, buffering=0, prefix="upload-")


def _pread(spool: BinaryIO, offset: int, size: int) -> bytes:
    """Exactly `size` bytes from `offset` (the caller knows they have been written)."""
    data = os.pread(spool.fileno(), size, offset)
    if len(data) == size:
        return data
    pieces, done = [data], len(data)
    while done < size:  # a short read from a regular file: only at very large sizes
        more = os.pread(spool.fileno(), size - done, offset + done)
        if not more:
            raise EOFError(f"spool ends at {offset + done}, wanted {offset + size}")
        pieces.append(more)
        done += len(more)
    return b"".join(pieces)
