"""Conformance suite for the `BlobStore` protocol (dproxy_shared.storage.base).

Every backend must pass every test here. A backend is one `Backend` entry in `BACKENDS`:
how to open a store at a location (opening the same location twice gives the same store),
and how to list every object the backend holds, temporary ones included, as keys relative
to the store root. An S3 backend becomes one more entry (a bucket/prefix per test and a
`list_objects_v2` lister).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dproxy_shared.oci.digest import Digest
from dproxy_shared.storage.base import (
    CHUNK_SIZE,
    BlobNotFound,
    BlobStore,
    DigestMismatch,
    put_bytes,
)
from dproxy_shared.storage.local import LocalBlobStore

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Path], BlobStore]
    keys: Callable[[BlobStore, Path], Awaitable[set[str]]]


def _open_local(tmp_path: Path) -> BlobStore:
    return LocalBlobStore(tmp_path / "store")


async def _local_keys(store: BlobStore, tmp_path: Path) -> set[str]:
    del store
    root = tmp_path / "store"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


BACKENDS = [Backend("local", _open_local, _local_keys)]


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[BlobStore]:
    opened = backend.open(tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
def keys(backend: Backend, store: BlobStore, tmp_path: Path) -> Callable[[], Awaitable[set[str]]]:
    """Every object the backend holds right now (blobs and any temporary upload)."""

    def list_keys() -> Awaitable[set[str]]:
        return backend.keys(store, tmp_path)

    return list_keys


# ---- helpers ------------------------------------------------------------------------------
def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def layout_key(digest: Digest) -> str:
    """The documented layout, spelled out independently of the product's `blob_key`."""
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


async def store_blob(
    store: BlobStore, data: bytes, digest: Digest | None = None, chunk: int = 64 * KiB
) -> Digest:
    digest = digest or Digest.of(data)
    writer = await store.writer()
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    await writer.commit(digest)
    return digest


async def read_all(
    store: BlobStore, digest: Digest, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in store.read(digest, offset, length)])


async def assert_absent(store: BlobStore, digest: Digest) -> None:
    assert await store.stat(digest) is None
    stream = store.read(digest)  # the contract: raises on the first iteration, not before
    with pytest.raises(BlobNotFound):
        await anext(aiter(stream))
    with pytest.raises(BlobNotFound):
        await store.read_bytes(digest)


# ---- write, commit, read ------------------------------------------------------------------
async def test_committed_blob_reads_back_exactly(store: BlobStore) -> None:
    data = payload(300 * KiB + 7)
    digest = await store_blob(store, data)

    assert await store.stat(digest) == len(data)
    assert await read_all(store, digest) == data
    assert await store.read_bytes(digest) == data


async def test_writer_size_counts_bytes_written(store: BlobStore) -> None:
    writer = await store.writer()
    assert writer.size == 0
    await writer.write(b"abc")
    await writer.write(b"")
    await writer.write(b"defgh")
    assert writer.size == 8
    await writer.commit(Digest.of(b"abcdefgh"))
    assert await store.read_bytes(Digest.of(b"abcdefgh")) == b"abcdefgh"


async def test_empty_blob(store: BlobStore) -> None:
    digest = await store_blob(store, b"")
    assert digest.hex == hashlib.sha256(b"").hexdigest()
    assert await store.stat(digest) == 0
    assert await read_all(store, digest) == b""
    assert await store.read_bytes(digest) == b""


RANGE_SIZE = 2 * CHUNK_SIZE + 17


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        pytest.param(0, None, id="whole"),
        pytest.param(0, 1, id="first-byte"),
        pytest.param(RANGE_SIZE - 1, 1, id="last-byte"),
        pytest.param(RANGE_SIZE - 1, None, id="last-byte-to-end"),
        pytest.param(RANGE_SIZE, None, id="empty-remainder"),
        pytest.param(1000, 0, id="zero-length"),
        pytest.param(CHUNK_SIZE - 3, 6, id="across-chunk-boundary"),
        pytest.param(17, 2 * CHUNK_SIZE, id="multi-chunk-middle"),
        pytest.param(RANGE_SIZE - 10, 100, id="length-past-end"),
        pytest.param(RANGE_SIZE + 5, None, id="offset-past-end"),
    ],
)
async def test_read_range(store: BlobStore, offset: int, length: int | None) -> None:
    data = payload(RANGE_SIZE, seed=3)
    digest = await store_blob(store, data)
    end = None if length is None else offset + length
    assert await read_all(store, digest, offset, length) == data[offset:end]


async def test_large_blob_in_many_small_writes(store: BlobStore) -> None:
    data = payload(20 * MiB, seed=20)
    expected = hashlib.sha256(data).hexdigest()
    digest = await store_blob(store, data, Digest("sha256", expected), chunk=64 * KiB)

    assert await store.stat(digest) == 20 * MiB
    hasher = hashlib.sha256()
    total = 0
    async for chunk in store.read(digest):
        hasher.update(chunk)
        total += len(chunk)
    assert total == 20 * MiB
    assert hasher.hexdigest() == expected


async def test_sha512_digests(store: BlobStore, keys: Callable[[], Awaitable[set[str]]]) -> None:
    data = payload(200 * KiB, seed=5)
    digest = await store_blob(store, data, Digest.of(data, "sha512"), chunk=50 * KiB)

    assert digest.algorithm == "sha512"
    assert await store.stat(digest) == len(data)
    assert await store.read_bytes(digest) == data
    assert await read_all(store, digest, 100, 10) == data[100:110]
    assert await keys() == {layout_key(digest)}
    # The same bytes under their sha256 are a different object, not stored.
    assert await store.stat(Digest.of(data)) is None


async def test_sha512_mismatch_is_refused(store: BlobStore) -> None:
    wrong = Digest.of(b"something else", "sha512")
    writer = await store.writer()
    await writer.write(b"the real bytes")
    with pytest.raises(DigestMismatch) as caught:
        await writer.commit(wrong)
    assert caught.value.actual == hashlib.sha512(b"the real bytes").hexdigest()
    await assert_absent(store, wrong)


# ---- failures leave nothing behind --------------------------------------------------------
async def test_wrong_digest_raises_and_leaves_nothing(
    store: BlobStore, keys: Callable[[], Awaitable[set[str]]]
) -> None:
    data = payload(150 * KiB, seed=7)
    claimed = Digest.of(b"not these bytes")
    writer = await store.writer()
    await writer.write(data[: 100 * KiB])
    await writer.write(data[100 * KiB :])

    with pytest.raises(DigestMismatch) as caught:
        await writer.commit(claimed)

    assert caught.value.expected == claimed
    assert caught.value.actual == hashlib.sha256(data).hexdigest()
    assert caught.value.size == len(data)
    await assert_absent(store, claimed)
    await assert_absent(store, Digest.of(data))  # not kept under its real digest either
    await writer.abort()  # still safe
    assert await keys() == set()


async def test_mismatched_upload_never_replaces_a_verified_object(store: BlobStore) -> None:
    good = payload(100 * KiB, seed=8)
    digest = await store_blob(store, good)

    writer = await store.writer()
    await writer.write(payload(100 * KiB, seed=9))  # same size, other bytes
    with pytest.raises(DigestMismatch):
        await writer.commit(digest)

    assert await store.stat(digest) == len(good)
    assert await store.read_bytes(digest) == good


async def test_abort_leaves_nothing(
    store: BlobStore, keys: Callable[[], Awaitable[set[str]]]
) -> None:
    data = payload(100 * KiB, seed=10)
    writer = await store.writer()
    await writer.write(data)
    await writer.abort()
    await writer.abort()  # idempotent

    await assert_absent(store, Digest.of(data))
    assert await keys() == set()


async def test_abort_after_commit_keeps_the_object(store: BlobStore) -> None:
    data = b"committed then aborted"
    writer = await store.writer()
    await writer.write(data)
    await writer.commit(Digest.of(data))
    await writer.abort()
    assert await store.read_bytes(Digest.of(data)) == data


async def test_no_temporary_objects_remain(
    store: BlobStore, keys: Callable[[], Awaitable[set[str]]]
) -> None:
    kept = [await store_blob(store, payload(70 * KiB, seed=s)) for s in (11, 12)]

    aborted = await store.writer()
    await aborted.write(payload(70 * KiB, seed=13))
    await aborted.abort()

    mismatched = await store.writer()
    await mismatched.write(payload(70 * KiB, seed=14))
    with pytest.raises(DigestMismatch):
        await mismatched.commit(Digest.of(b"nope"))

    await store.check()

    assert await keys() == {layout_key(d) for d in kept}


async def test_upload_in_progress_is_not_visible(
    store: BlobStore, keys: Callable[[], Awaitable[set[str]]]
) -> None:
    data = payload(100 * KiB, seed=15)
    digest = Digest.of(data)
    writer = await store.writer()
    await writer.write(data)
    await assert_absent(store, digest)
    assert layout_key(digest) not in await keys()
    await writer.commit(digest)
    assert await store.read_bytes(digest) == data


# ---- followers read an upload while it grows ----------------------------------------------
async def test_read_written_follows_the_upload_and_survives_commit(store: BlobStore) -> None:
    first, second = payload(1000, seed=16), payload(2000, seed=17)
    whole = first + second
    writer = await store.writer()
    assert await writer.read_written(0, 100) == b""

    await writer.write(first)
    assert await writer.read_written(0, 10_000) == first
    assert await writer.read_written(10, 5) == first[10:15]
    assert await writer.read_written(1000, 10) == b"", "not written yet"

    await writer.write(second)
    assert await writer.read_written(1000, 10_000) == second
    assert await writer.read_written(990, 20) == whole[990:1010]

    await writer.commit(Digest.of(whole))
    assert await writer.read_written(0, 10_000) == whole
    assert await writer.read_written(2500, 10_000) == whole[2500:]
    assert await writer.read_written(3000, 10) == b""


async def test_follower_streams_a_growing_upload_to_the_end(store: BlobStore) -> None:
    data = payload(4 * MiB, seed=18)
    writer = await store.writer()

    async def produce() -> None:
        for start in range(0, len(data), 64 * KiB):
            await writer.write(data[start : start + 64 * KiB])
            await asyncio.sleep(0)
        await writer.commit(Digest.of(data))

    async def follow() -> bytes:
        got = bytearray()
        while len(got) < len(data):
            chunk = await writer.read_written(len(got), 100 * KiB)
            if not chunk:
                await asyncio.sleep(0.001)
            got += chunk
        return bytes(got)

    _, followed = await asyncio.wait_for(asyncio.gather(produce(), follow()), timeout=60)
    assert followed == data
    assert await store.stat(Digest.of(data)) == len(data)


# ---- concurrency and lifecycle ------------------------------------------------------------
async def test_two_writers_commit_the_same_digest(
    store: BlobStore, keys: Callable[[], Awaitable[set[str]]]
) -> None:
    data = payload(3 * MiB, seed=19)
    digest = Digest.of(data)
    one, two = await store.writer(), await store.writer()
    for start in range(0, len(data), 256 * KiB):
        await one.write(data[start : start + 256 * KiB])
        await two.write(data[start : start + 256 * KiB])

    await asyncio.gather(one.commit(digest), two.commit(digest))

    assert await store.stat(digest) == len(data)
    assert await read_all(store, digest) == data
    assert await keys() == {layout_key(digest)}


async def test_duplicate_commit_does_not_disturb_a_read_in_flight(store: BlobStore) -> None:
    data = payload(3 * CHUNK_SIZE, seed=21)
    digest = await store_blob(store, data, chunk=CHUNK_SIZE)

    stream = aiter(store.read(digest))
    got = bytearray(await anext(stream))
    assert 0 < len(got) < len(data)

    await store_blob(store, data, digest)  # a second fetch of the same blob lands

    async for chunk in stream:
        got += chunk
    assert bytes(got) == data


async def test_delete(store: BlobStore, keys: Callable[[], Awaitable[set[str]]]) -> None:
    digest = await store_blob(store, b"delete me")
    assert await store.delete(digest) is True
    assert await store.delete(digest) is False
    await assert_absent(store, digest)
    assert await keys() == set()
    assert await store.delete(Digest.of(b"never stored")) is False


async def test_blob_can_be_stored_again_after_delete(store: BlobStore) -> None:
    digest = await store_blob(store, b"round and round")
    await store.delete(digest)
    await store_blob(store, b"round and round")
    assert await store.read_bytes(digest) == b"round and round"


async def test_put_bytes(store: BlobStore, keys: Callable[[], Awaitable[set[str]]]) -> None:
    manifest = b'{\n   "schemaVersion": 2,\n   "layers": []\n}'
    digest = Digest.of(manifest)
    await put_bytes(store, manifest, digest)
    assert await store.read_bytes(digest) == manifest

    wrong = Digest.of(b"a different manifest")
    with pytest.raises(DigestMismatch):
        await put_bytes(store, manifest + b" ", wrong)
    await assert_absent(store, wrong)
    assert await keys() == {layout_key(digest)}


async def test_check_succeeds_on_a_usable_store(store: BlobStore) -> None:
    await store.check()
    await store.check()


async def test_objects_use_the_documented_layout(
    store: BlobStore, keys: Callable[[], Awaitable[set[str]]]
) -> None:
    small, other = b"layout", payload(1000, seed=22)
    digests = {await store_blob(store, small), await store_blob(store, other)}
    assert await keys() == {f"blobs/sha256/{d.hex[:2]}/{d.hex}" for d in digests}


async def test_objects_survive_reopening_the_store(
    backend: Backend, store: BlobStore, tmp_path: Path
) -> None:
    data = payload(10 * KiB, seed=23)
    digest = await store_blob(store, data)
    await store.close()

    reopened = backend.open(tmp_path)
    try:
        assert await reopened.stat(digest) == len(data)
        assert await reopened.read_bytes(digest) == data
    finally:
        await reopened.close()


# ---- local backend specifics --------------------------------------------------------------
async def test_local_object_path(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = b"where does it live"
    digest = await store_blob(store, data)
    expected = tmp_path / "blobs" / "sha256" / digest.hex[:2] / digest.hex
    assert expected.read_bytes() == data
    assert store.path(digest) == expected


async def test_local_check_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "volume")
    await store.check()
    shutil.rmtree(tmp_path / "volume")
    with pytest.raises(OSError):
        await store.check()
