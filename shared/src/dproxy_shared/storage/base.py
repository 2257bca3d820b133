"""The `BlobStore` contract every storage backend fulfils (see tests/storage for the suite).

Layout (the same for every backend, so objects can be moved between them)::

    blobs/
      sha256/
        ab/
          ab12…ef   one object per digest, written once, never modified

A writer hashes while it writes and publishes the object under its digest only when the
hash matches; a half-written or mismatched object is never visible under a digest key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Protocol

from dproxy_shared.oci.digest import Digest

CHUNK_SIZE = 1024 * 1024


class BlobNotFound(Exception):
    pass


class DigestMismatch(Exception):
    def __init__(self, expected: Digest, actual: str, size: int) -> None:
        super().__init__(f"expected {expected}, got {expected.algorithm}:{actual} ({size} bytes)")
        self.expected = expected
        self.actual = actual
        self.size = size


def blob_key(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


class BlobWriter(Protocol):
    """One upload in progress. Readable while it grows, so followers can stream it."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    async def write(self, chunk: bytes) -> None: ...

    async def read_written(self, offset: int, max_bytes: int) -> bytes:
        """Bytes already written from `offset`; empty when the writer has not got there yet."""
        ...

    async def commit(self, expected: Digest) -> None:
        """Publish under `expected` if the hash matches; otherwise discard and raise."""
        ...

    async def abort(self) -> None:
        """Discard the upload. Safe to call after commit (it does nothing then)."""
        ...


class BlobStore(Protocol):
    async def stat(self, digest: Digest) -> int | None:
        """The object's size, or None when it is absent."""
        ...

    def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream the object (or a range of it). Raises BlobNotFound on the first iteration."""
        ...

    async def read_bytes(self, digest: Digest) -> bytes:
        """A small object (a manifest) whole."""
        ...

    async def writer(self, expected: Digest | None = None) -> BlobWriter:
        """A new upload. `expected`, when known, lets a backend stream to its final place
        (S3 multipart); the digest is verified at commit either way."""
        ...

    async def redirect_url(self, digest: Digest, expires: timedelta) -> str | None:
        """A URL clients may fetch the object from directly, or None (local storage)."""
        ...

    async def delete(self, digest: Digest) -> bool: ...

    async def check(self) -> None:
        """Raise when the backend is unusable (readiness probe)."""
        ...

    async def close(self) -> None: ...


async def put_bytes(store: BlobStore, data: bytes, digest: Digest) -> None:
    """Store a small object (a manifest) under its digest, verified like any blob."""
    writer = await store.writer(digest)
    try:
        await writer.write(data)
        await writer.commit(digest)
    finally:
        await writer.abort()
