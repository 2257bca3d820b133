"""Upstream faults: corrupt content, outages, clients that leave, Docker Hub-style auth."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GROUP, USER, DproxyFactory, Images, push_all
from tests.support import TokenServer, UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.skopeo import copy_to_dir, dir_manifest

pytestmark = pytest.mark.e2e

# The core suite runs on the embedded default and on the split production topology.
TOPOLOGIES = ("embedded", "split")


@pytest.fixture
def own_upstream(tmp_path: Path, images: Images) -> Iterator[UpstreamRegistry]:
    """An upstream this test may stop, restart or break."""
    registry = UpstreamRegistry(tmp_path / "upstream").start()
    push_all(registry, images)
    yield registry
    registry.stop()


def blob_url(dproxy: DproxyServer, image: str, digest: str) -> str:
    return f"{dproxy.url}/v2/{GROUP}/dependency_proxy/containers/{image}/blobs/{digest}"


def manifest_url(dproxy: DproxyServer, image: str, reference: str) -> str:
    return f"{dproxy.url}/v2/{GROUP}/dependency_proxy/containers/{image}/manifests/{reference}"


def bearer(dproxy: DproxyServer, image: str) -> dict[str, str]:
    scope = f"repository:{GROUP}/dependency_proxy/containers/{image}:pull"
    return {"Authorization": f"Bearer {dproxy.registry_token(*USER, scope)}"}


def test_corrupt_upstream_blob_is_never_cached(
    own_upstream: UpstreamRegistry, images: Images, tmp_path: Path, dproxy_factory: DproxyFactory
) -> None:
    dproxy = dproxy_factory(tmp_path / "dproxy", own_upstream.url)
    layer = images.oci.layers[0]
    try:
        with own_upstream.corrupt_blob(layer.digest):
            result = copy_to_dir(
                dproxy.image(GROUP, "alpine:latest"), tmp_path / "bad", creds=USER, check=False
            )
            assert not result.ok
            # The object was not stored: a direct request goes upstream again and fails again.
            with (
                httpx.stream(
                    "GET",
                    blob_url(dproxy, "alpine", layer.digest),
                    headers=bearer(dproxy, "alpine"),
                ) as response,
                pytest.raises(httpx.HTTPError),
            ):
                response.read()
        own_upstream.reset_log()
        copy_to_dir(dproxy.image(GROUP, "alpine:latest"), tmp_path / "good", creds=USER)
        assert dir_manifest(tmp_path / "good") == images.oci.manifest
        assert own_upstream.blob_gets().get(layer.digest) == 1
        stored = dproxy.stored_blob(layer.digest)
        assert stored is not None and hashlib.sha256(stored).hexdigest() == layer.hex
    finally:
        dproxy.stop()


def test_cached_image_is_served_while_upstream_is_down(
    own_upstream: UpstreamRegistry, images: Images, tmp_path: Path, dproxy_factory: DproxyFactory
) -> None:
    # Revalidate on every pull (GitLab's behaviour) so that the outage is actually noticed.
    dproxy = dproxy_factory(
        tmp_path / "dproxy", own_upstream.url, env={"DPROXY_MANIFEST_REVALIDATE_AFTER": "0"}
    )
    try:
        copy_to_dir(dproxy.image(GROUP, "debian:12"), tmp_path / "before", creds=USER)
        own_upstream.stop()
        copy_to_dir(dproxy.image(GROUP, "debian:12"), tmp_path / "during", creds=USER)
        assert dir_manifest(tmp_path / "during") == images.docker.manifest
        response = httpx.get(
            manifest_url(dproxy, "debian", "12"),
            headers={**bearer(dproxy, "debian"), "Accept": images.docker.media_type},
        )
        assert response.status_code == 200
        assert response.headers["warning"] == '110 - "Response is Stale"'
        # Without a cached copy the outage is a gateway error, in the registry's format.
        missing = httpx.get(
            manifest_url(dproxy, "alpine", "latest"), headers=bearer(dproxy, "alpine")
        )
        assert missing.status_code == 502
        assert missing.json()["errors"][0]["code"] == "BAD_GATEWAY"
    finally:
        dproxy.stop()


def test_fill_completes_when_the_client_disconnects(
    dproxy: DproxyServer, upstream: UpstreamRegistry, images: Images
) -> None:
    layer = max(images.large.layers, key=lambda b: b.size)
    url = blob_url(dproxy, "large", layer.digest)
    headers = bearer(dproxy, "large")
    with httpx.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        next(response.iter_raw(64 * 1024))  # take a little, then hang up
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if layer.digest in dproxy.stored_digests():
            break
        time.sleep(0.2)
    body = httpx.get(url, headers=headers).content
    assert hashlib.sha256(body).hexdigest() == layer.hex
    assert upstream.blob_gets()[layer.digest] == 1


def test_head_on_an_uncached_blob_does_not_download_it(
    dproxy: DproxyServer, upstream: UpstreamRegistry, images: Images
) -> None:
    layer = images.large.layers[0]
    response = httpx.head(blob_url(dproxy, "large", layer.digest), headers=bearer(dproxy, "large"))
    assert response.status_code == 200
    assert response.headers["content-length"] == str(layer.size)
    assert response.headers["docker-content-digest"] == layer.digest
    assert upstream.count("GET", "/blobs/") == 0
    assert upstream.count("HEAD", layer.digest) == 1


def test_range_requests_on_a_cached_blob(dproxy: DproxyServer, images: Images) -> None:
    layer = images.oci.layers[0]
    url = blob_url(dproxy, "alpine", layer.digest)
    headers = bearer(dproxy, "alpine")
    whole = httpx.get(url, headers=headers)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    data = layer.read_bytes()
    partial = httpx.get(url, headers={**headers, "Range": "bytes=100-199"})
    assert partial.status_code == 206
    assert partial.content == data[100:200]
    assert partial.headers["content-range"] == f"bytes 100-199/{len(data)}"
    suffix = httpx.get(url, headers={**headers, "Range": "bytes=-10"})
    assert suffix.content == data[-10:]
    beyond = httpx.get(url, headers={**headers, "Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416


@pytest.fixture
def token_upstream(
    tmp_path: Path, images: Images
) -> Iterator[tuple[UpstreamRegistry, TokenServer]]:
    """The upstream behind Docker Hub-style bearer-token auth."""
    tokens = TokenServer(tmp_path / "tokens").start()
    registry = UpstreamRegistry(tmp_path / "upstream", token_auth=tokens).start()
    registry.push(images.oci, "library/alpine", "latest")
    registry.reset_log()
    tokens.reset_stats()
    yield registry, tokens
    registry.stop()
    tokens.stop()


def test_pull_through_a_token_auth_upstream_reuses_its_tokens(
    token_upstream: tuple[UpstreamRegistry, TokenServer],
    images: Images,
    tmp_path: Path,
    dproxy_factory: DproxyFactory,
) -> None:
    registry, tokens = token_upstream
    dproxy = dproxy_factory(
        tmp_path / "dproxy", registry.url, env={"DPROXY_MANIFEST_REVALIDATE_AFTER": "0"}
    )
    try:
        copy_to_dir(dproxy.image(GROUP, "alpine:latest"), tmp_path / "one", creds=USER)
        assert dir_manifest(tmp_path / "one") == images.oci.manifest
        assert tokens.stats().by_scope == {"repository:library/alpine:pull": 1}
        # Within the token's lifetime the next pull (a HEAD revalidation) asks for none.
        copy_to_dir(dproxy.image(GROUP, "alpine:latest"), tmp_path / "two", creds=USER)
        assert tokens.stats().tokens_issued == 1
        assert registry.count("GET", "/blobs/") == len(images.oci.blobs)
    finally:
        dproxy.stop()
