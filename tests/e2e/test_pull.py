"""Pulling through dproxy with a real client (skopeo) from a real upstream registry."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from tests.conftest import GROUP, USER, Images
from tests.support import UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.skopeo import copy_to_dir, dir_blob_digests, dir_manifest, inspect_raw

pytestmark = pytest.mark.e2e

# The core suite runs on the embedded default and on the split production topology.
TOPOLOGIES = ("embedded", "split")


def pull(dproxy: DproxyServer, ref: str, dest: Path, **options: object) -> None:
    copy_to_dir(dproxy.image(GROUP, ref), dest, creds=USER, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ref", "attr"),
    [
        ("alpine:latest", "oci"),
        ("debian:12", "docker"),
        ("multi:latest", "index"),
        ("multi:v2s2", "manifest_list"),
    ],
)
def test_manifests_are_served_byte_for_byte(
    dproxy: DproxyServer, images: Images, ref: str, attr: str
) -> None:
    image = getattr(images, attr)
    raw = inspect_raw(dproxy.image(GROUP, ref), creds=USER)
    assert raw.stdout == image.manifest


def test_pull_gets_the_upstream_image_then_serves_it_from_cache(
    dproxy: DproxyServer, upstream: UpstreamRegistry, images: Images, tmp_path: Path
) -> None:
    pull(dproxy, "alpine:latest", tmp_path / "first")
    assert dir_manifest(tmp_path / "first") == images.oci.manifest
    assert dir_blob_digests(tmp_path / "first") == {b.digest for b in images.oci.blobs}
    assert upstream.blob_gets() == {b.digest: 1 for b in images.oci.blobs}

    upstream.reset_log()
    pull(dproxy, "alpine:latest", tmp_path / "second")
    assert dir_manifest(tmp_path / "second") == images.oci.manifest
    assert upstream.count("GET", "/blobs/") == 0

    upstream.reset_log()
    pull(dproxy, f"alpine@{images.oci.digest}", tmp_path / "by-digest")
    assert dir_manifest(tmp_path / "by-digest") == images.oci.manifest
    assert upstream.requests() == [], "a pull by digest of a cached image needs no upstream"


@pytest.mark.parametrize(
    ("ref", "attr"), [("multi:latest", "index"), ("multi:v2s2", "manifest_list")]
)
def test_override_arch_gets_the_arm64_child(
    dproxy: DproxyServer, images: Images, tmp_path: Path, ref: str, attr: str
) -> None:
    image = getattr(images, attr)
    pull(dproxy, ref, tmp_path / "arm", override_arch="arm64")
    arm64 = image.child("arm64", "v8")
    assert dir_manifest(tmp_path / "arm") == arm64.manifest
    assert dir_blob_digests(tmp_path / "arm") == {b.digest for b in arm64.own_blobs}


def test_five_segment_image_in_a_three_level_subgroup(
    dproxy: DproxyServer, images: Images, tmp_path: Path
) -> None:
    for path in ("top", "top/middle", "top/middle/bottom"):
        dproxy.add_group(path)
    dproxy.add_member("top", USER[0])  # inherited by every subgroup
    ref = "top/middle/bottom/dependency_proxy/containers/one/two/three/four/five:1"
    copy_to_dir(f"{dproxy.address}/{ref}", tmp_path / "deep", creds=USER)
    assert dir_manifest(tmp_path / "deep") == images.deep.manifest


def test_concurrent_cold_pulls_fetch_each_blob_and_manifest_once(
    dproxy: DproxyServer, upstream: UpstreamRegistry, images: Images, tmp_path: Path
) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(pull, dproxy, "large:1", tmp_path / f"p{i}") for i in range(8)]
        for future in futures:
            future.result()
    for i in range(8):
        assert dir_blob_digests(tmp_path / f"p{i}") == {b.digest for b in images.large.blobs}
    assert upstream.blob_gets() == {b.digest: 1 for b in images.large.blobs}
    assert upstream.count("GET", "/manifests/") == 1
