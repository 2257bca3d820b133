"""`BlobStore` on a local directory (the embedded default).

File I/O runs in worker threads so the event loop never waits on the disk; hashing happens
in the same thread call as the write (hashlib releases the GIL on large buffers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from dproxy_shared.oci.digest import Digest, Hasher
from dproxy_shared.storage.base import CHUNK_SIZE, BlobNotFound, DigestMismatch, blob_key


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._uploads = root / "_uploads"
        self._uploads.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.root / blob_key(digest)

    async def stat(self, digest: Digest) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self.path(digest))).st_size
        except FileNotFoundError:
            return None

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(open, self.path(digest), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(str(digest)) from exc
        try:
            await asyncio.to_thread(handle.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                size = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def read_bytes(self, digest: Digest) -> bytes:
        try:
            return await asyncio.to_thread(self.path(digest).read_bytes)
        except FileNotFoundError as exc:
            raise BlobNotFound(str(digest)) from exc

    async def writer(self, expected: Digest | None = None) -> LocalBlobWriter:
        path = self._uploads / uuid.uuid4().hex
        return await asyncio.to_thread(LocalBlobWriter.create, self, path)

    async def redirect_url(self, digest: Digest, expires: timedelta) -> str | None:
        return None  # files are served by dproxy itself

    async def delete(self, digest: Digest) -> bool:
        try:
            await asyncio.to_thread(os.unlink, self.path(digest))
        except FileNotFoundError:
            return False
        return True

    async def check(self) -> None:
        await asyncio.to_thread(_check_writable, self._uploads)

    async def close(self) -> None:
        return None


def _check_writable(directory: Path) -> None:
    probe = directory / f".probe-{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    probe.unlink()


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore, path: Path, out: BinaryIO, inp: BinaryIO) -> None:
        self._store = store
        self._path = path
        self._out = out
        # A second handle for followers while the upload grows; after commit they read the
        # published object instead.
        self._in: BinaryIO | None = inp
        self._published: Path | None = None
        self._hasher: Hasher | None = None
        self._algorithm: str | None = None
        self._pending: list[bytes] = []
        self._size = 0
        self._done = False
        self._read_lock = asyncio.Lock()

    @classmethod
    def create(cls, store: LocalBlobStore, path: Path) -> LocalBlobWriter:
        out = open(path, "xb")  # noqa: SIM115 - closed by commit/abort
        return cls(store, path, out, open(path, "rb"))

    @property
    def size(self) -> int:
        return self._size

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("write after commit or abort")
        # The algorithm is only known at commit; sha256 is what registries use, so hash
        # with it as we go and fall back to re-reading the file for anything else.
        if self._hasher is None:
            self._hasher = Digest("sha256", "").hasher()
        await asyncio.to_thread(self._write_sync, chunk)
        self._size += len(chunk)

    def _write_sync(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._out.flush()  # followers read through another handle
        assert self._hasher is not None
        self._hasher.update(chunk)

    async def read_written(self, offset: int, max_bytes: int) -> bytes:
        available = self._size - offset
        if available <= 0:
            return b""
        async with self._read_lock:
            return await asyncio.to_thread(self._pread, offset, min(max_bytes, available))

    def _pread(self, offset: int, size: int) -> bytes:
        if self._in is not None:
            return os.pread(self._in.fileno(), size, offset)
        if self._published is None:
            raise BlobNotFound("upload was discarded")
        with open(self._published, "rb") as handle:
            return os.pread(handle.fileno(), size, offset)

    async def commit(self, expected: Digest) -> None:
        if self._done:
            raise RuntimeError("commit after commit or abort")
        actual = await asyncio.to_thread(self._final_hash, expected.algorithm)
        if actual != expected.hex:
            await self.abort()
            raise DigestMismatch(expected, actual, self._size)
        target = self._store.path(expected)
        async with self._read_lock:
            await asyncio.to_thread(self._publish, target)
            self._published = target
            self._done = True

    def _final_hash(self, algorithm: str) -> str:
        self._out.flush()
        os.fsync(self._out.fileno())
        if algorithm == "sha256":
            hasher = self._hasher or Digest("sha256", "").hasher()
            return hasher.hexdigest()
        hasher = Digest(algorithm, "").hasher()
        with open(self._path, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                hasher.update(chunk)
        return hasher.hexdigest()

    def _publish(self, target: Path) -> None:
        self._out.close()
        self._close_reader()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Atomic on one filesystem: readers see either no object or the whole verified one.
        os.replace(self._path, target)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        async with self._read_lock:
            await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        self._out.close()
        self._close_reader()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def _close_reader(self) -> None:
        if self._in is not None:
            self._in.close()
            self._in = None
