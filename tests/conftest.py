"""Shared fixtures: synthetic images, a real upstream registry, and dproxy processes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import Image, ImageBuilder, UpstreamRegistry, services
from tests.support.dproxy import DproxyServer
from tests.support.images import MiB
from tests.support.s3 import S3Endpoint, s3_endpoint

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
    data_dir: Path,
    upstream_url: str,
    *,
    split: bool = False,
    migrated: bool = False,
    env: dict[str, str] | None = None,
) -> DproxyServer:
    """A fresh dproxy with group `grp` and user alice, a Guest of it."""
    server = DproxyServer(data_dir, upstream_url, split=split, migrated=migrated, env=env)
    server.start()
    server.add_group(GROUP)
    server.add_user(*USER)
    server.add_member(GROUP, USER[0])
    return server


Topology = str  # "embedded" or "split"
DproxyFactory = Callable[..., DproxyServer]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets `TOPOLOGIES = ("embedded", "split")` runs on both."""
    topologies = getattr(metafunc.module, "TOPOLOGIES", None)
    if topologies and "topology" in metafunc.fixturenames:
        metafunc.parametrize("topology", topologies, indirect=True, scope="module")


@pytest.fixture(scope="module")
def topology(request: pytest.FixtureRequest) -> Topology:
    """`embedded`: `dproxy serve` on SQLite and files. `split`: auth, registry and fetcher
    as three processes on Postgres, Redis and S3 (SeaweedFS)."""
    return str(getattr(request, "param", "embedded"))


@pytest.fixture(scope="module")
def dproxy_factory(topology: Topology, request: pytest.FixtureRequest) -> DproxyFactory:
    def make(
        data_dir: Path, upstream_url: str, *, env: dict[str, str] | None = None
    ) -> DproxyServer:
        if topology == "embedded":
            return start_dproxy(data_dir, upstream_url, env=env)
        port: int = request.getfixturevalue("postgres_port")
        template: str = request.getfixturevalue("postgres_template")
        redis: str = request.getfixturevalue("redis_url")
        endpoint: S3Endpoint = request.getfixturevalue("s3")
        services.flush_redis(redis)
        with contextlib.ExitStack() as cleanup:
            backing = {
                "DPROXY_DATABASE_URL": cleanup.enter_context(
                    services.postgres_database(port, template)
                ),
                "DPROXY_REDIS_URL": redis,
                **s3_env(endpoint),
            }
            server = start_dproxy(
                data_dir, upstream_url, split=True, env={**backing, **(env or {})}
            )
            server.on_stop.append(cleanup.pop_all().close)
        return server

    return make


@pytest.fixture
def dproxy(
    tmp_path: Path, upstream: UpstreamRegistry, dproxy_factory: DproxyFactory
) -> Iterator[DproxyServer]:
    server = dproxy_factory(tmp_path / "dproxy", upstream.url)
    upstream.reset_log()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_dproxy(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: UpstreamRegistry,
    dproxy_factory: DproxyFactory,
) -> Iterator[DproxyServer]:
    """One dproxy for a module whose tests do not depend on a cold cache."""
    server = dproxy_factory(tmp_path_factory.mktemp("dproxy"), upstream.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty Redis database (the machine's on 127.0.0.1:6379, or one started here)."""
    with services.redis_url(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with services.postgres_server(tmp_path_factory.mktemp("postgres")) as port:
        yield port


@pytest.fixture(scope="session")
def postgres_template(postgres_port: int) -> Iterator[str]:
    """A migrated database that each split dproxy's database is copied from."""
    with services.migrated_template(postgres_port) as name:
        yield name


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """SeaweedFS for the whole session (or the S3 in DPROXY_TEST_S3_*)."""
    with s3_endpoint(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


def s3_env(endpoint: S3Endpoint) -> dict[str, str]:
    """Blob storage for one dproxy: the shared bucket, under a prefix of its own."""
    return {
        "DPROXY_STORAGE_URL": f"s3://{endpoint.bucket}/{uuid.uuid4().hex}",
        "DPROXY_S3_ENDPOINT": endpoint.url,
        "DPROXY_S3_ACCESS_KEY": endpoint.access_key,
        "DPROXY_S3_SECRET_KEY": endpoint.secret_key,
    }
