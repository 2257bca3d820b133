"""Several replicas of each service on Postgres and Redis: one upstream fetch per digest across
all of them, and a crashed fetcher's lease frees itself."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GROUP, USER, Images, s3_env
from tests.support import UpstreamRegistry, services
from tests.support.dproxy import DproxyServer
from tests.support.s3 import S3Endpoint
from tests.support.skopeo import copy_to_dir, dir_blob_digests

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicated(
    tmp_path: Path,
    upstream: UpstreamRegistry,
    postgres_port: int,
    redis_url: str,
    s3: S3Endpoint,
    postgres_template: str,
) -> Iterator[DproxyServer]:
    """2 registries and 2 fetchers (registry i → fetcher i) behind a round-robin front, on
    Postgres, Redis and S3."""
    services.flush_redis(redis_url)
    with services.postgres_database(postgres_port, postgres_template) as database_url:
        server = DproxyServer(
            tmp_path / "dproxy",
            upstream.url,
            replicas=2,
            migrated=True,
            env={
                "DPROXY_DATABASE_URL": database_url,
                "DPROXY_REDIS_URL": redis_url,
                "DPROXY_FILL_LEASE_SECONDS": "3",
                **s3_env(s3),
            },
        ).start()
        try:
            server.add_group(GROUP)
            server.add_user(*USER)
            server.add_member(GROUP, USER[0])
            upstream.reset_log()
            yield server
        finally:
            server.stop()


def test_cold_pulls_spread_over_replicas_fetch_each_blob_once(
    replicated: DproxyServer, upstream: UpstreamRegistry, images: Images, tmp_path: Path
) -> None:
    def pull(i: int) -> set[str]:
        dest = tmp_path / f"pull-{i}"
        copy_to_dir(replicated.image(GROUP, "large:1"), dest, creds=USER)
        return dir_blob_digests(dest)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(pull, range(16)))
    assert all(result == {b.digest for b in images.large.blobs} for result in results)
    assert upstream.blob_gets() == {b.digest: 1 for b in images.large.blobs}
    assert upstream.count("GET", "/manifests/") == 1
    assert replicated.front is not None
    assert all(count > 0 for count in replicated.front.connections.values())


def _blob_rows(database_url: str, digest: str) -> int:
    psql_url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    result = subprocess.run(
        [
            "psql",
            psql_url,
            "-tAc",
            f"SELECT count(*) FROM dependency_proxy_blobs WHERE digest = '{digest}'",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(result.stdout.strip())


def test_a_crashed_fetcher_leaves_nothing_behind_and_its_lease_expires(
    replicated: DproxyServer, upstream: UpstreamRegistry, images: Images
) -> None:
    layer = max(images.large.layers, key=lambda b: b.size)
    scope = f"repository:{GROUP}/dependency_proxy/containers/large:pull"
    headers = {"Authorization": f"Bearer {replicated.registry_token(*USER, scope)}"}
    path = f"/v2/{GROUP}/dependency_proxy/containers/large/blobs/{layer.digest}"
    first, second = replicated.registry_ports
    with httpx.stream("GET", f"http://127.0.0.1:{first}{path}", headers=headers) as response:
        assert response.status_code == 200
        chunks = response.iter_raw(1024 * 1024)
        next(chunks)
        os.kill(replicated.pid("fetcher-0"), signal.SIGKILL)  # registry 0's fetcher leads
        with pytest.raises(httpx.HTTPError):
            for _ in chunks:
                pass
    assert replicated.stored_digests() == set(), "no partial object is ever visible"
    assert _blob_rows(replicated.env["DPROXY_DATABASE_URL"], layer.digest) == 0

    started = time.monotonic()
    body = httpx.get(f"http://127.0.0.1:{second}{path}", headers=headers, timeout=60).content
    assert hashlib.sha256(body).hexdigest() == layer.hex
    assert time.monotonic() - started < 30, "the dead fetcher's lease should expire (3 s)"
    assert replicated.stored_digests() == {layer.digest}
    assert _blob_rows(replicated.env["DPROXY_DATABASE_URL"], layer.digest) == 1
    assert upstream.blob_gets()[layer.digest] == 2  # the aborted fetch, then the good one
