"""Per-group upstream credentials: a group pulls private images with its own, the secret is
write-only, and no other group gets at those images through the cache."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GROUP, USER, DproxyFactory, Images
from tests.support import TokenServer, UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.skopeo import copy_to_dir, dir_manifest

pytestmark = pytest.mark.e2e

TOPOLOGIES = ("embedded", "split")
PRIVATE = "alice/secret"  # only the upstream user alice may pull the `alice` namespace


@pytest.fixture
def private_upstream(tmp_path: Path, images: Images) -> Iterator[UpstreamRegistry]:
    tokens = TokenServer(
        tmp_path / "tokens",
        users={"alice": "alice-secret", "bob": "bob-secret", "admin": "admin-secret"},
        private_namespaces=("alice", "bob"),
    ).start()
    registry = UpstreamRegistry(tmp_path / "upstream", token_auth=tokens).start()
    registry.push(images.oci, PRIVATE, "1")
    yield registry
    registry.stop()
    tokens.stop()


def get(dproxy: DproxyServer, group: str, kind: str, reference: str, images: Images) -> int:
    scope = f"repository:{group}/dependency_proxy/containers/{PRIVATE}:pull"
    response = httpx.get(
        f"{dproxy.url}/v2/{group}/dependency_proxy/containers/{PRIVATE}/{kind}/{reference}",
        headers={
            "Authorization": f"Bearer {dproxy.registry_token(*USER, scope)}",
            "Accept": images.oci.media_type,
        },
        timeout=30,
    )
    return response.status_code


def test_a_group_pulls_private_images_with_its_own_credentials(
    private_upstream: UpstreamRegistry,
    images: Images,
    tmp_path: Path,
    dproxy_factory: DproxyFactory,
) -> None:
    dproxy = dproxy_factory(tmp_path / "dproxy", private_upstream.url)
    try:
        for group in ("team", "other"):
            dproxy.add_group(group)
            dproxy.add_member(group, USER[0])
        settings = "/groups/team/dependency_proxy/settings"
        out = dproxy.api("PUT", settings, {"identity": "alice", "secret": "alice-secret"})
        assert out == {"enabled": True, "identity": "alice"}
        assert dproxy.api("GET", settings) == {"enabled": True, "identity": "alice"}
        dproxy.api(
            "PUT",
            "/groups/other/dependency_proxy/settings",
            {"identity": "bob", "secret": "bob-secret"},
        )
        with pytest.raises(urllib.error.HTTPError) as half:
            dproxy.api("PUT", settings, {"identity": "alice"})
        assert half.value.code == 400
        # Changing `enabled` alone keeps the credentials.
        assert dproxy.api("PUT", settings, {"enabled": True}) == {
            "enabled": True,
            "identity": "alice",
        }
        if not dproxy.split:  # SQLite: the secret is not stored in clear
            assert b"alice-secret" not in (dproxy.data_dir / "dproxy.db").read_bytes()

        # Without credentials upstream refuses (as Docker Hub does for private repositories).
        assert get(dproxy, GROUP, "manifests", "1", images) == 404

        copy_to_dir(dproxy.image("team", f"{PRIVATE}:1"), tmp_path / "team", creds=USER)
        assert dir_manifest(tmp_path / "team") == images.oci.manifest

        # Everything is cached now, yet a group whose credentials upstream refuses gets
        # none of it: by tag, by digest, blobs.
        for kind, reference in [
            ("manifests", "1"),
            ("manifests", images.oci.digest),
            ("blobs", images.oci.layers[0].digest),
        ]:
            assert get(dproxy, "other", kind, reference, images) == 404, (kind, reference)
        assert get(dproxy, "team", "manifests", images.oci.digest, images) == 200
    finally:
        dproxy.stop()
