"""Conformance suite for the `BlobStore` protocol (dproxy_shared.storage.base).

Every backend must pass every test here. A backend is one `Backend` entry in `BACKENDS`:
how to open a store at a location (opening the same location twice gives the same store),
and how to list every object the backend holds, temporary ones included, as keys relative
to the store root. The S3 backend runs against SeaweedFS (`tests/support/s3.py`, started
once per session) or the S3 named by DPROXY_TEST_S3_*, with a prefix per test.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio.datatypes import Object
from pydantic import SecretStr

from dproxy_shared.oci.digest import Digest
from dproxy_shared.settings import Settings
from dproxy_shared.storage import open_blob_store
from dproxy_shared.storage.base import (
    CHUNK_SIZE,
    BlobNotFound,
    BlobStore,
    DigestMismatch,
    put_bytes,
)
from dproxy_shared.storage.local import LocalBlobStore
from dproxy_shared.storage.s3 import MIN_PART_SIZE, BucketUnavailable, S3BlobStore
from tests.support.s3 import S3Endpoint
from tests.support.upstream import free_port

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Backend:
    name: str
    # (the test's request, for session resources such as an S3 server; a location)
    open: Callable[[pytest.FixtureRequest, Path], BlobStore]
    keys: Callable[[BlobStore, Path], Awaitable[set[str]]]


def _open_local(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    del request
    return LocalBlobStore(tmp_path / "store")


async def _local_keys(store: BlobStore, tmp_path: Path) -> set[str]:
    del store
    root = tmp_path / "store"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def _open_s3(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    endpoint: S3Endpoint = request.getfixturevalue("s3")
    # One prefix per location (tmp_path is per test), so every test starts empty.
    prefix = f"conformance/{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]}"
    request.addfinalizer(lambda: _wipe(endpoint, prefix))
    return open_s3_store(endpoint, tmp_path, prefix=prefix)


async def _s3_keys(store: BlobStore, tmp_path: Path) -> set[str]:
    """Objects under the store's prefix, unfinished multipart uploads, and spool files."""
    assert isinstance(store, S3BlobStore)
    objects, uploads = await asyncio.to_thread(_s3_listing, store)
    spool = {f"spool:{p.name}" for p in (tmp_path / "spool").iterdir()}
    return objects | {f"{key} (unfinished multipart upload)" for key in uploads} | spool


BACKENDS = [
    Backend("local", _open_local, _local_keys),
    Backend("s3", _open_s3, _s3_keys),
]


def open_s3_store(
    endpoint: S3Endpoint, tmp_path: Path, *, prefix: str, bucket: str | None = None, **options: Any
) -> S3BlobStore:
    return S3BlobStore(
        endpoint.address,
        endpoint.access_key,
        endpoint.secret_key,
        bucket or endpoint.bucket,
        secure=endpoint.secure,
        prefix=prefix,
        spool_dir=tmp_path / "spool",
        **options,
    )


def _s3_listing(store: S3BlobStore) -> tuple[set[str], set[str]]:
    """(object keys, keys with an unfinished multipart upload), relative to the prefix."""
    client, prefix = store.client, store.prefix
    objects = {
        str(o.object_name)[len(prefix) :]
        for o in client.list_objects(store.bucket, prefix=prefix, recursive=True)
    }
    listed = client._list_multipart_uploads(store.bucket, prefix=prefix)
    assert not listed.is_truncated
    uploads = {u.object_name[len(prefix) :] for u in listed.uploads}
    return objects, uploads


def _wipe(endpoint: S3Endpoint, prefix: str) -> None:
    """Leave a shared (DPROXY_TEST_S3_*) bucket as it was found."""
    client = endpoint.client()
    for found in client.list_objects(endpoint.bucket, prefix=f"{prefix}/", recursive=True):
        client.remove_object(endpoint.bucket, str(found.object_name))


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@pytest.fixture
def open_store(
    backend: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], BlobStore]:
    """Open the test's store (again): the same location gives the same objects."""
    return lambda: backend.open(request, tmp_path)


@pytest.fixture
async def store(open_store: Callable[[], BlobStore]) -> AsyncIterator[BlobStore]:
    opened = open_store()
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


async def test_read_written_after_commit_and_abort(store: BlobStore) -> None:
    """A fill commits, then aborts in its `finally`, while followers are still behind."""
    data = payload(300 * KiB, seed=24)
    writer = await store.writer()
    await writer.write(data)
    await writer.commit(Digest.of(data))
    await writer.abort()
    assert await writer.read_written(0, len(data)) == data
    assert await writer.read_written(len(data) - 5, 100) == data[-5:]


async def test_read_written_after_abort_fails(store: BlobStore) -> None:
    writer = await store.writer()
    await writer.write(b"going away")
    await writer.abort()
    with pytest.raises(BlobNotFound):
        await writer.read_written(0, 10)


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
    open_store: Callable[[], BlobStore], store: BlobStore
) -> None:
    data = payload(10 * KiB, seed=23)
    digest = await store_blob(store, data)
    await store.close()

    reopened = open_store()
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


# ---- s3 backend specifics -----------------------------------------------------------------
@pytest.fixture
async def s3_store(s3: S3Endpoint, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    """Smallest legal parts, so a few MiB make a multipart upload."""
    prefix = f"s3-specific/{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]}"
    store = open_s3_store(s3, tmp_path, prefix=prefix, part_size=MIN_PART_SIZE)
    yield store
    await store.close()
    await asyncio.to_thread(_wipe, s3, prefix)


async def s3_listing(store: S3BlobStore) -> tuple[set[str], set[str]]:
    return await asyncio.to_thread(_s3_listing, store)


async def s3_object(store: S3BlobStore, digest: Digest) -> Object:
    return await asyncio.to_thread(store.client.stat_object, store.bucket, store.key(digest))


async def wait_for_upload(store: S3BlobStore, key: str) -> None:
    """Parts go up in the background: wait until S3 holds an unfinished upload for `key`."""
    for _ in range(200):
        _, uploads = await s3_listing(store)
        if key in uploads:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no multipart upload for {key}")


async def test_s3_streams_parts_while_writing_and_completes_at_commit(
    s3_store: S3BlobStore,
) -> None:
    data = payload(21 * MiB + 3, seed=30)
    digest = Digest.of(data)
    writer = await s3_store.writer(digest)
    for start in range(0, len(data), 256 * KiB):
        await writer.write(data[start : start + 256 * KiB])

    await wait_for_upload(s3_store, layout_key(digest))
    assert await s3_store.stat(digest) is None, "an unfinished upload is not an object"
    await writer.commit(digest)

    assert await s3_listing(s3_store) == ({layout_key(digest)}, set())
    found = await s3_object(s3_store, digest)
    assert found.size == len(data)
    assert str(found.etag).endswith("-5"), "4 parts of 5 MiB and the rest"
    assert hashlib.sha256(await read_all(s3_store, digest)).digest() == bytes.fromhex(digest.hex)


async def test_s3_mismatch_leaves_no_object_and_no_upload(s3_store: S3BlobStore) -> None:
    data = payload(12 * MiB, seed=31)
    claimed = Digest.of(b"what upstream promised")
    writer = await s3_store.writer(claimed)
    for start in range(0, len(data), MiB):
        await writer.write(data[start : start + MiB])
    await wait_for_upload(s3_store, layout_key(claimed))

    with pytest.raises(DigestMismatch):
        await writer.commit(claimed)

    assert await s3_listing(s3_store) == (set(), set())
    await assert_absent(s3_store, claimed)
    await assert_absent(s3_store, Digest.of(data))


async def test_s3_abort_mid_upload_leaves_no_upload(s3_store: S3BlobStore) -> None:
    data = payload(11 * MiB, seed=32)
    writer = await s3_store.writer(Digest.of(data))
    await writer.write(data)
    await wait_for_upload(s3_store, layout_key(Digest.of(data)))
    await writer.abort()
    assert await s3_listing(s3_store) == (set(), set())


async def test_s3_commit_under_another_digest_than_announced(s3_store: S3BlobStore) -> None:
    data = payload(7 * MiB, seed=33)
    announced = Digest.of(b"a digest the writer was opened for")
    writer = await s3_store.writer(announced)
    await writer.write(data)
    await wait_for_upload(s3_store, layout_key(announced))

    await writer.commit(Digest.of(data))

    assert await s3_listing(s3_store) == ({layout_key(Digest.of(data))}, set())
    assert await read_all(s3_store, Digest.of(data)) == data


async def test_s3_commit_of_a_stored_blob_keeps_the_object(s3_store: S3BlobStore) -> None:
    """A second fill of a blob already stored does not replace the object under readers."""
    data = payload(6 * MiB, seed=34)
    digest = await store_blob(s3_store, data, chunk=MiB)
    before = await s3_object(s3_store, digest)

    writer = await s3_store.writer(digest)
    await writer.write(data)
    await writer.commit(digest)

    after = await s3_object(s3_store, digest)
    assert (after.etag, after.last_modified) == (before.etag, before.last_modified)
    assert await s3_listing(s3_store) == ({layout_key(digest)}, set())


async def test_s3_part_sized_blob(s3_store: S3BlobStore) -> None:
    """Exactly two full parts: the last part is uploaded during writes, commit only completes."""
    data = payload(2 * MIN_PART_SIZE, seed=35)
    digest = Digest.of(data)
    writer = await s3_store.writer(digest)
    await writer.write(data)
    await writer.commit(digest)
    assert await s3_store.stat(digest) == len(data)
    assert await read_all(s3_store, digest, MIN_PART_SIZE - 2, 4) == data[MIN_PART_SIZE - 2 :][:4]


async def test_s3_presigned_url_serves_the_blob(s3_store: S3BlobStore) -> None:
    data = payload(3 * MiB, seed=36)
    digest = await store_blob(s3_store, data)

    url = await s3_store.redirect_url(digest, timedelta(minutes=5))

    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        ranged = await client.get(url, headers={"Range": "bytes=10-19"})
    assert response.status_code == 200
    assert response.content == data
    assert ranged.status_code == 206
    assert ranged.content == data[10:20]


async def test_s3_presigned_url_names_the_public_endpoint(s3: S3Endpoint, tmp_path: Path) -> None:
    # Presigning is offline: the public address (here one nothing listens on) is not called.
    store = open_s3_store(
        s3, tmp_path, prefix="p", public_endpoint="127.0.0.1:9", public_secure=True
    )
    try:
        digest = Digest.of(b"anything")
        url = await store.redirect_url(digest, timedelta(seconds=90))
    finally:
        await store.close()
    assert url.startswith(f"https://127.0.0.1:9/{s3.bucket}/p/{layout_key(digest)}?")
    assert "X-Amz-Expires=90" in url


async def test_s3_store_at_the_bucket_root(s3: S3Endpoint, tmp_path: Path) -> None:
    bucket = await asyncio.to_thread(s3.ensure_bucket, f"dproxy-root-{uuid.uuid4().hex[:12]}")
    store = open_s3_store(s3, tmp_path, prefix="", bucket=bucket)
    try:
        digest = await store_blob(store, b"at the root")
        names = await asyncio.to_thread(
            lambda: {str(o.object_name) for o in store.client.list_objects(bucket, recursive=True)}
        )
        assert names == {layout_key(digest)}
        assert await store.delete(digest)
    finally:
        await store.close()
        await asyncio.to_thread(s3.client().remove_bucket, bucket)


async def test_s3_abandoned_reads_release_their_connections(s3_store: S3BlobStore) -> None:
    """Clients that leave mid-blob: each GET is closed, and the pool still works after."""
    data = payload(4 * CHUNK_SIZE, seed=37)
    digest = await store_blob(s3_store, data, chunk=CHUNK_SIZE)
    for _ in range(3):
        streams = [aiter(s3_store.read(digest)) for _ in range(80)]  # more than the pool
        for stream in streams:
            assert len(await anext(stream)) > 0
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
    assert await read_all(s3_store, digest) == data


async def test_s3_check_fails_for_a_missing_bucket(s3: S3Endpoint, tmp_path: Path) -> None:
    store = open_s3_store(s3, tmp_path, prefix="", bucket="dproxy-no-such-bucket")
    try:
        with pytest.raises(BucketUnavailable):
            await store.check()
    finally:
        await store.close()


async def test_s3_check_fails_fast_when_unreachable(tmp_path: Path) -> None:
    down = S3Endpoint(f"http://127.0.0.1:{free_port()}", "key", "secret", "bucket")
    store = open_s3_store(down, tmp_path, prefix="")
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(Exception):  # noqa: B017 - whichever error the SDK raises
            await store.check()
    finally:
        await store.close()
    assert asyncio.get_running_loop().time() - started < 5


def test_factory_opens_s3_with_prefix(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_url="s3://layers/dproxy/prod",
        s3_endpoint="https://s3.internal:9000",
        s3_access_key="ak",
        s3_secret_key=SecretStr("sk"),
    )
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("layers", "dproxy/prod/")
    assert store.key(Digest.of(b"x")) == f"dproxy/prod/{layout_key(Digest.of(b'x'))}"
    assert store.spool_dir == settings.spool_dir


@pytest.mark.parametrize(
    ("storage_url", "endpoint"),
    [
        pytest.param("s3://", "http://127.0.0.1:9000", id="no-bucket"),
        pytest.param("s3://bucket", "", id="no-endpoint"),
        pytest.param("s3://bucket", "127.0.0.1:9000", id="endpoint-without-scheme"),
        pytest.param("s3://bucket", "http://127.0.0.1:9000/path", id="endpoint-with-path"),
    ],
)
def test_factory_rejects_incomplete_s3_settings(
    tmp_path: Path, storage_url: str, endpoint: str
) -> None:
    settings = Settings(data_dir=tmp_path, storage_url=storage_url, s3_endpoint=endpoint)
    with pytest.raises(ValueError):
        open_blob_store(settings)
