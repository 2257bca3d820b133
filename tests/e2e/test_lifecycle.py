"""The cache's lifecycle: what a group sees of its cache, purge, TTL and the cleanup, and
that a cleanup racing with pulls never deletes what a pull is about to serve."""

from __future__ import annotations

import concurrent.futures
import hashlib
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import USER, DproxyFactory, Images
from tests.support import UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.images import Image
from tests.support.skopeo import copy_to_dir, dir_blob_digests, dir_manifest

pytestmark = pytest.mark.e2e

TOPOLOGIES = ("embedded", "split")
CACHE_TABLES = ("dependency_proxy_manifests", "dependency_proxy_blobs")
READ_GRACE = 4.0


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: UpstreamRegistry,
    dproxy_factory: DproxyFactory,
) -> Iterator[DproxyServer]:
    """One dproxy whose cleanup runs every 0.2 s and destroys rows unread for 4 s; each test
    works in groups of its own."""
    env = {"DPROXY_CLEANUP_INTERVAL": "0.2", "DPROXY_CLEANUP_READ_GRACE": str(READ_GRACE)}
    server = dproxy_factory(tmp_path_factory.mktemp("lifecycle"), upstream.url, env=env)
    yield server
    server.stop()


def _new_group(proxy: DproxyServer, level: int = 10) -> str:
    """A new group with alice as a member (Guest by default)."""
    path = f"g{uuid.uuid4().hex[:10]}"
    proxy.add_group(path)
    proxy.add_member(path, USER[0], level)
    return path


def _pull(proxy: DproxyServer, group: str, ref: str, dest: Path) -> None:
    copy_to_dir(proxy.image(group, ref), dest, creds=USER)


def _digests(image: Image) -> set[str]:
    return {image.digest, *(b.digest for b in image.blobs)}


def _get(proxy: DproxyServer, path: str, token: str | None = None) -> httpx.Response:
    headers = {"PRIVATE-TOKEN": token or proxy.root_token}
    return httpx.get(f"{proxy.api_url}{path}", headers=headers, timeout=30)


def _rows(proxy: DproxyServer, group: str, kind: str) -> list[dict[str, object]]:
    response = _get(proxy, f"/groups/{proxy.group_ids[group]}/dependency_proxy/{kind}?per_page=100")
    assert response.status_code == 200, response.text
    rows: list[dict[str, object]] = response.json()
    return rows


def _purge(proxy: DproxyServer, group: str) -> int:
    response = httpx.delete(
        f"{proxy.api_url}/groups/{proxy.group_ids[group]}/dependency_proxy/cache",
        headers={"PRIVATE-TOKEN": proxy.root_token},
    )
    return response.status_code


def _wait_until_cleaned(proxy: DproxyServer, group: str, timeout: float = 30.0) -> None:
    """Until the cleanup has processed every row of the group marked for destruction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _rows(proxy, group, "manifests") + _rows(proxy, group, "blobs")
        if all(row["status"] == "default" for row in rows):
            return
        time.sleep(0.1)
    raise AssertionError(f"cleanup did not finish: {rows}")


def _wait_until_empty(proxy: DproxyServer, group: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _rows(proxy, group, "manifests") and not _rows(proxy, group, "blobs"):
            return
        time.sleep(0.1)
    raise AssertionError("the cleanup left rows behind")


def _sql(proxy: DproxyServer, statement: str) -> str:
    """Run SQL on the dproxy's database (SQLite embedded, Postgres split)."""
    url = proxy.env.get("DPROXY_DATABASE_URL", "")
    if not url:
        with sqlite3.connect(proxy.data_dir / "dproxy.db") as db:
            return "\n".join("|".join(map(str, row)) for row in db.execute(statement))
    psql_url = url.replace("postgresql+asyncpg://", "postgresql://")
    result = subprocess.run(
        ["psql", psql_url, "-tAc", statement], check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def _age(proxy: DproxyServer, group: str, days: int) -> None:
    """Let `days` pass since the group's cached rows were last read."""
    when = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f")
    for table in CACHE_TABLES:
        _sql(
            proxy,
            f"UPDATE {table} SET read_at = '{when}' WHERE group_id = {proxy.group_ids[group]}",
        )


def test_purge_removes_rows_and_objects_then_a_pull_fills_again(
    proxy: DproxyServer, upstream: UpstreamRegistry, images: Images, tmp_path: Path
) -> None:
    group = _new_group(proxy)
    _pull(proxy, group, "alpine:latest", tmp_path / "first")
    wanted = _digests(images.oci)
    assert wanted <= proxy.stored_digests()
    assert {row["digest"] for row in _rows(proxy, group, "blobs")} == {
        b.digest for b in images.oci.blobs
    }

    assert _purge(proxy, group) == 202
    _wait_until_cleaned(proxy, group)
    assert _rows(proxy, group, "manifests") == []
    assert _rows(proxy, group, "blobs") == []
    assert not wanted & proxy.stored_digests(), "no other group references these objects"

    upstream.reset_log()
    _pull(proxy, group, "alpine:latest", tmp_path / "again")
    assert dir_manifest(tmp_path / "again") == images.oci.manifest
    assert upstream.blob_gets() == {b.digest: 1 for b in images.oci.blobs}
    assert wanted <= proxy.stored_digests()
    assert len(_rows(proxy, group, "blobs")) == len(images.oci.blobs)


def test_objects_another_group_references_survive_a_purge(
    proxy: DproxyServer, upstream: UpstreamRegistry, images: Images, tmp_path: Path
) -> None:
    purged, kept = _new_group(proxy), _new_group(proxy)
    _pull(proxy, purged, "debian:12", tmp_path / "purged")
    _pull(proxy, kept, "debian:12", tmp_path / "kept")

    assert _purge(proxy, purged) == 202
    _wait_until_cleaned(proxy, purged)
    assert _rows(proxy, purged, "blobs") == []
    assert _digests(images.docker) <= proxy.stored_digests()
    assert {row["status"] for row in _rows(proxy, kept, "blobs")} == {"default"}

    upstream.reset_log()
    _pull(proxy, kept, "debian:12", tmp_path / "again")
    assert dir_manifest(tmp_path / "again") == images.docker.manifest
    assert upstream.count("GET", "/blobs/") == 0


def test_ttl_policy_cleans_up_what_nobody_read(
    proxy: DproxyServer, images: Images, tmp_path: Path
) -> None:
    group, fresh = _new_group(proxy), _new_group(proxy)
    path = f"/groups/{proxy.group_ids[group]}/dependency_proxy/image_ttl_policy"
    assert proxy.api("GET", path) == {"enabled": False, "ttl": 90}
    _pull(proxy, group, "one/two/three/four/five:1", tmp_path / "old")
    _pull(proxy, fresh, "one/two/three/four/five:1", tmp_path / "fresh")

    assert proxy.api("PUT", path, {"enabled": True, "ttl": 7}) == {"enabled": True, "ttl": 7}
    _age(proxy, group, days=6)
    time.sleep(1.0)  # several cleanup passes
    assert {row["status"] for row in _rows(proxy, group, "blobs")} == {"default"}

    _age(proxy, group, days=8)
    _wait_until_empty(proxy, group)
    # The other group has no policy and read them just now: the objects stay.
    assert _digests(images.deep) <= proxy.stored_digests()

    fresh_path = f"/groups/{proxy.group_ids[fresh]}/dependency_proxy/image_ttl_policy"
    proxy.api("PUT", fresh_path, {"enabled": True, "ttl": 1})
    _age(proxy, fresh, days=2)
    _wait_until_empty(proxy, fresh)
    assert not _digests(images.deep) & proxy.stored_digests()


def _user_token(proxy: DproxyServer, name: str) -> str:
    created = proxy.api("POST", "/users", {"username": name, "password": f"pw-{name}-123456"})
    assert isinstance(created, dict)
    proxy.user_ids[name] = int(created["id"])
    token = proxy.api(
        "POST", f"/users/{created['id']}/personal_access_tokens", {"name": "t", "scopes": ["api"]}
    )
    assert isinstance(token, dict)
    return str(token["token"])


def test_visibility_and_permissions(proxy: DproxyServer, images: Images, tmp_path: Path) -> None:
    group = _new_group(proxy)
    suffix = uuid.uuid4().hex[:6]
    guest, owner, stranger = (_user_token(proxy, f"{r}{suffix}") for r in ("g", "o", "s"))
    proxy.add_member(group, f"g{suffix}", 10)
    proxy.add_member(group, f"o{suffix}", 50)
    _pull(proxy, group, "alpine:latest", tmp_path / "pulled")
    base = f"/groups/{proxy.group_ids[group]}/dependency_proxy"

    overview = _get(proxy, base, guest)
    assert overview.status_code == 200
    host = urlsplit(proxy.api_url).netloc
    manifest_size = len(images.oci.manifest)
    assert overview.json() == {
        "image_prefix": f"{host}/{group}/dependency_proxy/containers",
        "image_count": 1,
        "blob_count": len(images.oci.blobs),
        "total_size_bytes": manifest_size + sum(b.size for b in images.oci.blobs),
        "enabled": True,
    }

    manifests = _get(proxy, f"{base}/manifests", guest)
    assert manifests.status_code == 200
    assert manifests.headers["X-Total"] == "1"
    (manifest,) = manifests.json()
    assert manifest["image_name"] == "library/alpine"
    assert manifest["file_name"] == "latest"
    assert manifest["digest"] == images.oci.digest
    assert manifest["size"] == manifest_size
    assert manifest["content_type"] == images.oci.media_type
    assert manifest["status"] == "default"
    assert manifest["created_at"] and manifest["read_at"]

    blobs = _get(proxy, f"{base}/blobs?per_page=1", guest)
    assert blobs.status_code == 200
    assert blobs.headers["X-Total"] == str(len(images.oci.blobs))
    assert blobs.headers["X-Next-Page"] == "2"
    (blob,) = blobs.json()
    assert blob["digest"] in {b.digest for b in images.oci.blobs}
    assert blob["status"] == "default"
    assert blob["file_name"] == f"{blob['digest'].removeprefix('sha256:')}.gz"

    policy = f"{base}/image_ttl_policy"
    assert _get(proxy, policy, guest).json() == {"enabled": False, "ttl": 90}
    headers = {"PRIVATE-TOKEN": guest}
    assert (
        httpx.put(f"{proxy.api_url}{policy}", headers=headers, json={"ttl": 5}).status_code == 403
    )
    headers = {"PRIVATE-TOKEN": owner}
    changed = httpx.put(f"{proxy.api_url}{policy}", headers=headers, json={"ttl": 5})
    assert changed.status_code == 200
    assert changed.json() == {"enabled": False, "ttl": 5}
    for bad in ({"ttl": 0}, {"ttl": 3651}, {"enabled": "maybe"}):
        assert httpx.put(f"{proxy.api_url}{policy}", headers=headers, json=bad).status_code == 400
    assert _get(proxy, policy, guest).json() == {"enabled": False, "ttl": 5}

    for path in (base, f"{base}/manifests", f"{base}/blobs", policy):
        assert _get(proxy, path, stranger).status_code == 404
    headers = {"PRIVATE-TOKEN": stranger}
    assert (
        httpx.put(f"{proxy.api_url}{policy}", headers=headers, json={"ttl": 5}).status_code == 404
    )


def test_a_download_in_flight_keeps_its_object_through_a_purge(
    proxy: DproxyServer, images: Images
) -> None:
    group = _new_group(proxy)
    blob = max(images.large.blobs, key=lambda b: b.size)
    scope = f"repository:{group}/dependency_proxy/containers/large:pull"
    headers = {"Authorization": f"Bearer {proxy.registry_token(*USER, scope)}"}
    url = f"{proxy.url}/v2/{group}/dependency_proxy/containers/large/blobs/{blob.digest}"
    assert httpx.get(url, headers=headers, timeout=60).status_code == 200  # cached now

    with httpx.stream("GET", url, headers=headers, timeout=60) as download:
        assert download.status_code == 200
        chunks = download.iter_raw(64 * 1024)
        received = hashlib.sha256(next(chunks))
        # Purged while the client is downloading: the rows wait out the read grace,
        # so the object outlives several cleanup passes.
        assert _purge(proxy, group) == 202
        time.sleep(READ_GRACE / 4)
        assert blob.digest in proxy.stored_digests()
        assert _purge(proxy, group) == 409, "the purge is still running"
        for chunk in chunks:
            received.update(chunk)
    assert received.hexdigest() == blob.hex

    _wait_until_empty(proxy, group)
    assert blob.digest not in proxy.stored_digests()


def _reader(proxy: DproxyServer, group: str, image: Image, until: float) -> tuple[int, int]:
    """GET the manifest and every blob straight from /v2 until `until`, checking the bytes
    of every complete answer: (complete answers, failed or aborted ones)."""
    scope = f"repository:{group}/dependency_proxy/containers/alpine:pull"
    headers = {
        "Authorization": f"Bearer {proxy.registry_token(*USER, scope)}",
        "Accept": image.media_type,
    }
    base = f"/v2/{group}/dependency_proxy/containers/alpine"
    wanted = {f"{base}/manifests/latest": hashlib.sha256(image.manifest).hexdigest()}
    wanted |= {f"{base}/blobs/{blob.digest}": blob.hex for blob in image.blobs}
    complete = failed = 0
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=60) as client:
        while time.monotonic() < until:
            for path, hex_digest in wanted.items():
                try:
                    response = client.get(path)
                except httpx.HTTPError:
                    failed += 1  # aborted: an object deleted under its download
                    continue
                if response.status_code != 200:
                    failed += 1
                    continue
                assert hashlib.sha256(response.content).hexdigest() == hex_digest, path
                complete += 1
    return complete, failed


def test_purge_and_cleanup_racing_with_pulls_never_lose_an_object(
    proxy: DproxyServer, images: Images, tmp_path: Path
) -> None:
    group = _new_group(proxy)
    image = images.oci
    _pull(proxy, group, "alpine:latest", tmp_path / "warm")
    until = time.monotonic() + 8
    pulls_ok = purges = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        readers = [pool.submit(_reader, proxy, group, image, until) for _ in range(6)]
        n = 0
        while time.monotonic() < until:
            pulls = [
                pool.submit(
                    copy_to_dir,
                    proxy.image(group, "alpine:latest"),
                    tmp_path / f"{n}-{k}",
                    creds=USER,
                    check=False,
                )
                for k in range(2)
            ]
            while not all(pull.done() for pull in pulls):
                purges += _purge(proxy, group) == 202
                time.sleep(0.02)
            for k, pull in enumerate(pulls):
                assert pull.result().ok, pull.result().stderr
                pulls_ok += 1
                dest = tmp_path / f"{n}-{k}"
                assert dir_manifest(dest) == image.manifest
                assert dir_blob_digests(dest) == {b.digest for b in image.blobs}
            n += 1
        answers = [reader.result() for reader in readers]
    assert pulls_ok > 0 and purges > 0
    # Every request during the race was answered in full: a purge never takes an object
    # away from a pull that is serving it or about to.
    assert sum(complete for complete, _ in answers) > 0
    assert [failed for _, failed in answers] == [0] * len(answers)

    # What the race left behind: every active row's object is in storage.
    _wait_until_cleaned(proxy, group)
    stored = proxy.stored_digests()
    for table in CACHE_TABLES:
        digests = _sql(proxy, f"SELECT DISTINCT digest FROM {table} WHERE status = 0").split()
        assert set(digests) <= stored, f"{table}: rows whose object is gone"
    _pull(proxy, group, "alpine:latest", tmp_path / "last")
    assert dir_manifest(tmp_path / "last") == image.manifest
