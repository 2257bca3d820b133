"""Shared fixtures: synthetic images, a real upstream registry, and dproxy processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import Image, ImageBuilder, UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.images import MiB

GROUP = "grp"
USER = ("alice", "alice-password")


@dataclass(frozen=True)
class Images:
    oci: Image  # library/alpine:latest
    docker: Image  # library/debian:12
    index: Image  # library/multi:latest (OCI index, amd64 + arm64)
    manifest_list: Image  # library/multi:v2s2 (Docker manifest list)
    large: Image  # library/large:1 (5 layers, 100 MB+)
    deep: Image  # one/two/three/four/five:1 (a 5-segment name)


@pytest.fixture(scope="session")
def images() -> Images:
    builder = ImageBuilder()
    return Images(
        oci=builder.oci_image("e2e-oci"),
        docker=builder.docker_image("e2e-docker"),
        index=builder.oci_index("e2e-index"),
        manifest_list=builder.docker_manifest_list("e2e-list"),
        large=builder.large_image("e2e-large"),
        deep=builder.oci_image("e2e-deep", layer_sizes=(MiB,)),
    )


def push_all(upstream: UpstreamRegistry, images: Images) -> None:
    upstream.push(images.oci, "library/alpine", "latest")
    upstream.push(images.docker, "library/debian", "12")
    upstream.push(images.index, "library/multi", "latest")
    upstream.push(images.manifest_list, "library/multi", "v2s2")
    upstream.push(images.large, "library/large", "1")
    upstream.push(images.deep, "one/two/three/four/five", "1")
    upstream.reset_log()


@pytest.fixture(scope="session")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, images: Images
) -> Iterator[UpstreamRegistry]:
    """An open upstream registry (a Docker Hub stand-in) holding every test image."""
    registry = UpstreamRegistry(tmp_path_factory.mktemp("upstream")).start()
    push_all(registry, images)
    yield registry
    registry.stop()


def start_dproxy(
    data_dir: Path, upstream_url: str, *, split: bool = False, env: dict[str, str] | None = None
) -> DproxyServer:
    """A fresh dproxy with group `grp` and user alice, a Guest of it."""
    server = DproxyServer(data_dir, upstream_url, split=split, env=env).start()
    server.add_group(GROUP)
    server.add_user(*USER)
    server.add_member(GROUP, USER[0])
    return server


@pytest.fixture
def dproxy(tmp_path: Path, upstream: UpstreamRegistry) -> Iterator[DproxyServer]:
    server = start_dproxy(tmp_path / "dproxy", upstream.url)
    upstream.reset_log()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_dproxy(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamRegistry
) -> Iterator[DproxyServer]:
    """One dproxy for a module whose tests do not depend on a cold cache."""
    server = start_dproxy(tmp_path_factory.mktemp("dproxy"), upstream.url)
    yield server
    server.stop()
