"""Self-test of tests/support: the image builder, the upstream registry wrapper and its
request log, and the Docker Hub-style token server, checked against real docker-registry
and skopeo processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import skopeo
from tests.support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    ImageBuilder,
    MiB,
    sha256_file,
    verify_layer,
)
from tests.support.regclient import RegistryClient, RegistryError, parse_bearer_challenge
from tests.support.token_server import SignMode, TokenServer
from tests.support.upstream import UpstreamRegistry, parse_access_line

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
    reason="needs the docker-registry and skopeo Debian packages",
)

KINDS = ("oci", "docker", "index", "list")


def _build_all(builder: ImageBuilder) -> dict[str, Image]:
    return {
        "oci": builder.oci_image(),
        "docker": builder.docker_image(),
        "index": builder.oci_index(),
        "list": builder.docker_manifest_list(),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    return _build_all(ImageBuilder(tmp_path_factory.mktemp("image-cache"), seed=7))


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, Image]
) -> Iterator[UpstreamRegistry]:
    with UpstreamRegistry(tmp_path_factory.mktemp("upstream")) as reg:
        for kind, image in images.items():
            reg.push(image, f"library/{kind}", "latest")
        reg.reset_log()
        yield reg


@pytest.fixture(scope="module")
def large_image() -> Image:
    # The default cache dir: built once, then reused by every later run (keyed by seed).
    return ImageBuilder(seed=1).large_image()


# ---- images --------------------------------------------------------------------------------
def test_builder_is_deterministic(tmp_path: Path, images: dict[str, Image]) -> None:
    again = _build_all(ImageBuilder(tmp_path, seed=7))
    for kind in KINDS:
        assert again[kind].digest == images[kind].digest
        assert again[kind].manifest == images[kind].manifest
    other_seed = ImageBuilder(tmp_path, seed=8).oci_image()
    assert other_seed.digest != images["oci"].digest


def test_images_are_valid(images: dict[str, Image]) -> None:
    assert images["oci"].media_type == OCI_MANIFEST
    assert images["docker"].media_type == DOCKER_MANIFEST
    assert images["index"].media_type == OCI_INDEX
    assert images["list"].media_type == DOCKER_MANIFEST_LIST
    for kind in KINDS:
        top = images[kind]
        assert top.digest == "sha256:" + hashlib.sha256(top.manifest).hexdigest()
        doc = json.loads(top.manifest)
        assert doc["mediaType"] == top.media_type
        if top.is_index:
            plats = [m["platform"] for m in doc["manifests"]]
            assert plats == [
                {"architecture": "amd64", "os": "linux"},
                {"architecture": "arm64", "os": "linux", "variant": "v8"},
            ]
            assert [m["digest"] for m in doc["manifests"]] == [c.digest for c in top.children]
        for single in top.children or (top,):
            assert single.config is not None
            config = json.loads(single.config.read_bytes())
            assert single.platform is not None
            assert config["architecture"] == single.platform.architecture
            assert config["os"] == "linux"
            diff_ids = []
            for layer in single.layers:
                assert sha256_file(layer.path) == layer.digest
                assert layer.path.stat().st_size == layer.size
                diff_id, payload = verify_layer(layer)
                assert diff_id == layer.diff_id
                assert payload == (MiB if top.is_index else 2 * MiB)
                diff_ids.append(diff_id)
            assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
            # incompressible payload: gzip must not shrink it
            assert all(layer.size > 0.99 * MiB for layer in single.layers)
    # distinct names share no blob, so per-blob upstream counts are unambiguous
    all_digests = [b.digest for kind in KINDS for b in images[kind].blobs]
    assert len(all_digests) == len(set(all_digests))


def test_builder_cache_is_reused_and_repaired(tmp_path: Path) -> None:
    first = ImageBuilder(tmp_path).oci_image("cached", (3 * MiB,))
    layer = first.layers[0]
    mtime = layer.path.stat().st_mtime_ns
    second = ImageBuilder(tmp_path).oci_image("cached", (3 * MiB,))
    assert second == first
    assert layer.path.stat().st_mtime_ns == mtime  # not regenerated
    layer.path.unlink()
    third = ImageBuilder(tmp_path).oci_image("cached", (3 * MiB,))
    assert third.digest == first.digest
    assert sha256_file(layer.path) == layer.digest


# ---- upstream: push, inspect, pull ---------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_pushed_manifest_bytes_are_exact(
    upstream: UpstreamRegistry, images: dict[str, Image], kind: str
) -> None:
    image = images[kind]
    ref = f"{upstream.address}/library/{kind}"
    assert skopeo.inspect_raw(f"{ref}:latest").stdout == image.manifest
    for child in image.children:
        assert skopeo.inspect_raw(f"{ref}@{child.digest}").stdout == child.manifest
    r = upstream.client().head_manifest(f"library/{kind}", "latest")
    assert r.status == 200
    assert r.header("docker-content-digest") == image.digest
    assert r.header("content-type") == image.media_type


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_skopeo_pulls_single_image(
    upstream: UpstreamRegistry, images: dict[str, Image], kind: str, tmp_path: Path
) -> None:
    image = images[kind]
    skopeo.copy_to_dir(f"{upstream.address}/library/{kind}:latest", tmp_path / "out")
    assert skopeo.dir_manifest(tmp_path / "out") == image.manifest
    for blob in image.blobs:
        assert sha256_file(tmp_path / "out" / blob.hex) == blob.digest


@pytest.mark.parametrize("kind", ["index", "list"])
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_skopeo_picks_platform_from_index(
    upstream: UpstreamRegistry, images: dict[str, Image], kind: str, arch: str, tmp_path: Path
) -> None:
    want = images[kind].child(arch)
    skopeo.copy_to_dir(
        f"{upstream.address}/library/{kind}:latest", tmp_path / "out", override_arch=arch
    )
    assert skopeo.dir_manifest(tmp_path / "out") == want.manifest
    assert skopeo.dir_blob_digests(tmp_path / "out") == {b.digest for b in want.blobs}


# ---- upstream: request log -----------------------------------------------------------------
def test_access_line_parser() -> None:
    line = (
        '127.0.0.1 - - [03/Dec/2026:17:09:12 +0000] "HEAD /v2/x/manifests/y?a=b HTTP/1.1" '
        '404 91 "" "agent \\"quoted\\" 1.0"\n'
    )
    e = parse_access_line(line, 42)
    assert e is not None
    assert (e.method, e.path, e.status, e.size, e.offset) == (
        "HEAD",
        "/v2/x/manifests/y?a=b",
        404,
        91,
        42,
    )
    assert e.user_agent == 'agent "quoted" 1.0'
    assert parse_access_line('time="2026-12-03T17:09:11Z" level=info msg="listening"') is None


def test_request_log_counts_each_get(
    upstream: UpstreamRegistry, images: dict[str, Image], tmp_path: Path
) -> None:
    image = images["docker"]
    mark = upstream.mark()
    skopeo.copy_to_dir(f"{upstream.address}/library/docker:latest", tmp_path / "out")
    assert upstream.blob_gets(since=mark) == {b.digest: 1 for b in image.blobs}
    assert upstream.count("GET", "/v2/library/docker/manifests/", since=mark) == 1
    for blob in image.blobs:
        assert upstream.count("GET", blob.digest, status=200, since=mark) == 1

    mark = upstream.mark()
    client = upstream.client()
    client.get_blob("library/docker", image.layers[0].digest)
    client.blob_exists("library/docker", image.layers[0].digest)
    client.get_manifest("library/docker", "no-such-tag")
    entries = upstream.requests(since=mark)
    assert [(e.method, e.status) for e in entries] == [("GET", 200), ("HEAD", 200), ("GET", 404)]
    assert entries[0].size == image.layers[0].size
    assert entries[0].is_blob and entries[2].is_manifest

    upstream.reset_log()
    assert upstream.requests() == []


def test_stop_and_start_keep_port_and_storage(
    upstream: UpstreamRegistry, images: dict[str, Image]
) -> None:
    port = upstream.port
    upstream.stop()
    assert not upstream.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    upstream.start()
    assert upstream.port == port
    got = skopeo.inspect_raw(f"{upstream.address}/library/oci:latest").stdout
    assert got == images["oci"].manifest


def test_start_survives_a_stolen_port(tmp_path: Path) -> None:
    reg = UpstreamRegistry(tmp_path / "reg")
    taken = reg.port
    with socket.socket() as thief:  # someone else grabs the port between pick and bind
        thief.bind(("127.0.0.1", taken))
        thief.listen()
        with reg:
            assert reg.port != taken
            assert reg.client().request("GET", "/v2/").status == 200


def test_corrupt_blob_on_disk_and_restore(
    upstream: UpstreamRegistry, images: dict[str, Image]
) -> None:
    layer = images["oci"].layers[0]
    client = upstream.client()
    assert upstream.blob_data_path(layer.digest).stat().st_size == layer.size
    with upstream.corrupt_blob(layer.digest):
        r = client.get_blob("library/oci", layer.digest)
        assert r.status == 200
        assert len(r.body) == layer.size
        assert "sha256:" + hashlib.sha256(r.body).hexdigest() != layer.digest
    r = client.get_blob("library/oci", layer.digest)
    assert "sha256:" + hashlib.sha256(r.body).hexdigest() == layer.digest


def test_hidden_blob_and_deleted_manifest(
    upstream: UpstreamRegistry, images: dict[str, Image]
) -> None:
    image = images["docker"]
    client = upstream.client()
    with upstream.hide_blob(image.layers[0].digest):
        assert client.get_blob("library/docker", image.layers[0].digest).status == 404
    assert client.blob_exists("library/docker", image.layers[0].digest)

    upstream.push(image, "library/doomed", "1")
    upstream.delete_manifest("library/doomed", image.digest)
    assert client.get_manifest("library/doomed", image.digest).status == 404
    assert client.get_manifest("library/docker", "latest").status == 200


async def test_async_settle_and_counts(
    upstream: UpstreamRegistry, images: dict[str, Image]
) -> None:
    mark = upstream.mark()
    client = upstream.client()
    await asyncio.to_thread(client.get_blob, "library/oci", images["oci"].own_blobs[0].digest)
    await upstream.settle()
    assert upstream.count("GET", "/blobs/", since=mark, settle=0) == 1


def test_large_image(upstream: UpstreamRegistry, large_image: Image, tmp_path: Path) -> None:
    assert len(large_image.layers) == 5
    assert large_image.total_blob_size > 100_000_000
    upstream.push(large_image, "library/large", "1")  # the only push of it in this module
    mark = upstream.mark()
    skopeo.copy_to_dir(f"{upstream.address}/library/large:1", tmp_path / "out")
    assert skopeo.dir_manifest(tmp_path / "out") == large_image.manifest
    assert upstream.blob_gets(since=mark) == {b.digest: 1 for b in large_image.blobs}
    served = sum(e.size for e in upstream.requests(since=mark) if e.is_blob)
    assert served == large_image.total_blob_size


# ---- token auth ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    with TokenServer(tmp_path_factory.mktemp("token")) as ts:
        yield ts


@pytest.fixture(scope="module")
def auth_upstream(
    tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer, images: dict[str, Image]
) -> Iterator[UpstreamRegistry]:
    with UpstreamRegistry(tmp_path_factory.mktemp("auth"), token_auth=token_server) as reg:
        reg.push(images["oci"], "library/oci", "latest")
        reg.push(images["index"], "library/index", "latest")
        reg.push(images["docker"], "alice/private", "1")
        reg.reset_log()
        yield reg


def test_token_registry_rejects_anonymous(
    auth_upstream: UpstreamRegistry, token_server: TokenServer
) -> None:
    # no token -> 401 with a Docker Hub-style challenge (the client does not fetch one)
    client = RegistryClient(auth_upstream.url)
    r = client._send("GET", "/v2/library/oci/manifests/latest", {}, None, None)
    assert r.status == 401
    challenge = parse_bearer_challenge(r.header("www-authenticate"))
    assert challenge == {
        "realm": token_server.realm,
        "service": token_server.service,
        "scope": "repository:library/oci:pull",
    }
    bogus = client._send("GET", "/v2/library/oci/manifests/latest", {}, None, "not.a.token")
    assert bogus.status == 401


def test_token_dance_and_stats(
    auth_upstream: UpstreamRegistry,
    token_server: TokenServer,
    images: dict[str, Image],
    tmp_path: Path,
) -> None:
    token_server.reset_stats()
    r = RegistryClient(auth_upstream.url).get_manifest("library/oci", "latest")
    assert (r.status, r.body) == (200, images["oci"].manifest)
    stats = token_server.stats()
    assert (stats.tokens_issued, stats.anonymous) == (1, 1)
    assert stats.by_scope == {"repository:library/oci:pull": 1}

    arm = images["index"].child("arm64")
    skopeo.copy_to_dir(
        f"{auth_upstream.address}/library/index:latest", tmp_path / "out", override_arch="arm64"
    )
    assert skopeo.dir_manifest(tmp_path / "out") == arm.manifest
    assert token_server.stats().tokens_issued > 1
    assert auth_upstream.count("GET", "/blobs/", status=200) == len(arm.blobs)


def test_private_namespace_needs_credentials(
    auth_upstream: UpstreamRegistry, token_server: TokenServer, tmp_path: Path
) -> None:
    ref = f"{auth_upstream.address}/alice/private:1"
    anon = skopeo.copy_to_dir(ref, tmp_path / "anon", check=False)
    assert not anon.ok
    assert "denied" in anon.stderr or "unauthorized" in anon.stderr
    before = token_server.stats().auth_failures
    bad = skopeo.copy_to_dir(ref, tmp_path / "bad", creds=("alice", "wrong"), check=False)
    assert not bad.ok
    assert token_server.stats().auth_failures > before
    skopeo.copy_to_dir(ref, tmp_path / "good", creds=("alice", "alice-secret"))
    assert token_server.stats().by_user.get("alice", 0) >= 1


def test_token_server_outage(
    auth_upstream: UpstreamRegistry, token_server: TokenServer, tmp_path: Path
) -> None:
    token_server.fail_with = 503
    try:
        r = skopeo.copy_to_dir(
            f"{auth_upstream.address}/library/oci:latest", tmp_path / "o", check=False
        )
        assert not r.ok
        assert token_server.stats().injected_failures >= 1
    finally:
        token_server.fail_with = None


@pytest.mark.parametrize("sign_mode", ["x5c", "kid"])
def test_both_jwt_key_styles_are_accepted(
    tmp_path: Path, images: dict[str, Image], sign_mode: SignMode
) -> None:
    with (
        TokenServer(tmp_path / "token", sign_mode=sign_mode) as ts,
        UpstreamRegistry(tmp_path / "reg", token_auth=ts) as reg,
    ):
        reg.push(images["oci"], "library/oci", "latest")
        raw = skopeo.inspect_raw(f"{reg.address}/library/oci:latest").stdout
        assert raw == images["oci"].manifest


def test_read_only_auth_front_over_shared_storage(
    upstream: UpstreamRegistry, token_server: TokenServer, images: dict[str, Image], tmp_path: Path
) -> None:
    # Seed once, serve twice: an open registry and a token-auth one over the same storage.
    with UpstreamRegistry(
        tmp_path / "front",
        token_auth=token_server,
        storage_root=upstream.storage_root,
        read_only=True,
    ) as front:
        raw = skopeo.inspect_raw(f"{front.address}/library/docker:latest").stdout
        assert raw == images["docker"].manifest
        with pytest.raises(RegistryError) as err:
            front.push(images["oci"], "library/other", "1")
        assert err.value.status == 405  # read-only mode: writes are refused
