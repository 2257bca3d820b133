"""Malformed requests get registry errors (4xx, OCI JSON), never a 500 or a storage access."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.conftest import GROUP, USER
from tests.support.dproxy import DproxyServer

pytestmark = pytest.mark.e2e

# The core suite runs on the embedded default and on the split production topology.
TOPOLOGIES = ("embedded", "split")


@pytest.fixture
def dproxy(module_dproxy: DproxyServer) -> DproxyServer:
    return module_dproxy


PREFIX = f"/v2/{GROUP}/dependency_proxy/containers"
DIGEST = "sha256:" + "a" * 64

CASES = [
    (f"{PREFIX}/Alpine/manifests/latest", 400, "NAME_INVALID"),
    (f"{PREFIX}/alp..ine/manifests/latest", 400, "NAME_INVALID"),
    (f"{PREFIX}/a/b/c/d/e/f/manifests/latest", 400, "NAME_INVALID"),
    (f"{PREFIX}/../../../etc/passwd/blobs/{DIGEST}", 400, "NAME_INVALID"),
    (f"/v2/{GROUP}/../x/dependency_proxy/containers/alpine/manifests/latest", 400, "NAME_INVALID"),
    (f"{PREFIX}/alpine%2F..%2F..%2Fetc/manifests/latest", 400, "NAME_INVALID"),
    (f"/v2/{GROUP}%2fsub/dependency_proxy/containers/alpine/manifests/latest", 400, "NAME_INVALID"),
    (f"{PREFIX}/alp%2eine/manifests/latest", 400, "NAME_INVALID"),
    (f"{PREFIX}/alpine/manifests/latest%0A", 400, "NAME_INVALID"),
    (f"{PREFIX}/alpine/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
    (f"{PREFIX}/alpine/manifests/{'x' * 129}", 404, "MANIFEST_UNKNOWN"),
    (f"{PREFIX}/alpine/manifests/sha256:totallywrong", 400, "DIGEST_INVALID"),
    (f"{PREFIX}/alpine/blobs/latest", 400, "DIGEST_INVALID"),
    (f"{PREFIX}/alpine/blobs/sha256:{'A' * 64}", 400, "DIGEST_INVALID"),
    (f"{PREFIX}/alpine/blobs/md5:{'a' * 32}", 400, "DIGEST_INVALID"),
    (f"/v2/{GROUP}/alpine/manifests/latest", 404, "NAME_UNKNOWN"),
    (f"{PREFIX}/alpine/tags/list", 404, "NAME_UNKNOWN"),
]


def raw_get(
    dproxy: DproxyServer, path: str, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """Send the path exactly as written: no client-side normalisation of `..` or `%2F`."""
    connection = http.client.HTTPConnection("127.0.0.1", dproxy.port, timeout=10)
    token = dproxy.registry_token(
        *USER, f"repository:{GROUP}/dependency_proxy/containers/alpine:pull"
    )
    connection.request(method, path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.mark.parametrize(
    ("path", "status", "code"), CASES, ids=[c[0][len(PREFIX) :] or c[0] for c in CASES]
)
def test_malformed_paths_get_registry_errors(
    dproxy: DproxyServer, path: str, status: int, code: str
) -> None:
    got_status, headers, body = raw_get(dproxy, path)
    assert (got_status, json.loads(body)["errors"][0]["code"]) == (status, code)
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    assert dproxy.stored_digests() == set()


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH"])
def test_the_proxy_is_read_only(dproxy: DproxyServer, method: str) -> None:
    status, _, body = raw_get(dproxy, f"{PREFIX}/alpine/manifests/latest", method)
    assert status == 405 and json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
