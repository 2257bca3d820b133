"""Production topology specifics: readiness of each service, and blobs redirected to S3."""

from __future__ import annotations

import hashlib
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from tests.conftest import GROUP, USER, DproxyFactory, Images
from tests.support import UpstreamRegistry
from tests.support.dproxy import DPROXY
from tests.support.skopeo import copy_to_dir, dir_manifest
from tests.support.upstream import free_port

pytestmark = pytest.mark.e2e

TOPOLOGIES = ("split",)

CLOSED = "127.0.0.1:1"  # nothing listens on port 1


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("service", ["auth", "registry", "fetcher"])
def test_readiness_fails_while_database_redis_or_storage_is_down(
    tmp_path: Path, service: str
) -> None:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DPROXY_LISTEN": f"127.0.0.1:{port}",
        "DPROXY_DATA_DIR": str(tmp_path),
        "DPROXY_DATABASE_URL": f"postgresql+asyncpg://postgres@{CLOSED}/dproxy",
        "DPROXY_REDIS_URL": f"redis://{CLOSED}/0",
        "DPROXY_STORAGE_URL": "s3://dproxy",
        "DPROXY_S3_ENDPOINT": f"http://{CLOSED}",
        "DPROXY_AUTH_URL": f"http://{CLOSED}",
        "DPROXY_FETCHER_URL": f"http://{CLOSED}",
        "DPROXY_LOG_LEVEL": "critical",
    }
    process = subprocess.Popen(
        [DPROXY, "serve", "--service", service],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/-/liveness")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert status == 200, "liveness does no I/O: the process itself is fine"
        status, body = _get(f"http://127.0.0.1:{port}/-/readiness")
        assert status == 503
        checks = httpx.Response(200, content=body).json()["checks"]
        assert set(checks) == {"database", "redis", "storage"}
        assert all(value.startswith("failed") for value in checks.values())
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_readiness_passes_with_everything_up(
    dproxy_factory: DproxyFactory, upstream: UpstreamRegistry, tmp_path: Path
) -> None:
    server = dproxy_factory(tmp_path / "dproxy", upstream.url)
    try:
        for port in server.registry_ports:
            status, body = _get(f"http://127.0.0.1:{port}/-/readiness")
            assert status == 200, body
    finally:
        server.stop()


def test_cached_blobs_redirect_to_presigned_storage_urls(
    dproxy_factory: DproxyFactory, upstream: UpstreamRegistry, images: Images, tmp_path: Path
) -> None:
    server = dproxy_factory(
        tmp_path / "dproxy", upstream.url, env={"DPROXY_STORAGE_REDIRECT": "true"}
    )
    try:
        copy_to_dir(server.image(GROUP, "alpine:latest"), tmp_path / "cold", creds=USER)
        upstream.reset_log()
        # Served from the cache, now through redirects: skopeo follows them to S3.
        copy_to_dir(server.image(GROUP, "alpine:latest"), tmp_path / "warm", creds=USER)
        assert dir_manifest(tmp_path / "warm") == images.oci.manifest
        assert upstream.count("GET", "/blobs/") == 0

        layer = images.oci.layers[0]
        scope = f"repository:{GROUP}/dependency_proxy/containers/alpine:pull"
        token = server.registry_token(*USER, scope)
        url = f"{server.url}/v2/{GROUP}/dependency_proxy/containers/alpine/blobs/{layer.digest}"
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 307
        location = response.headers["location"]
        assert location.startswith(server.env["DPROXY_S3_ENDPOINT"])
        # The presigned URL alone is enough: no registry token goes to storage.
        body = httpx.get(location).content
        assert hashlib.sha256(body).hexdigest() == layer.hex
        head = httpx.head(url, headers={"Authorization": f"Bearer {token}"})
        assert head.status_code == 200 and head.headers["content-length"] == str(layer.size)
    finally:
        server.stop()
