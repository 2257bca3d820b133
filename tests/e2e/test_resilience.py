"""Upstream resilience: every fault class with and without a cached copy, the negative cache,
the circuit breaker and the rate-limit budget, against a fault-injecting upstream."""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GROUP, USER, DproxyFactory, Images, start_dproxy
from tests.e2e.test_faults import bearer, blob_url, manifest_url
from tests.support import UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.fault_upstream import FaultUpstream

pytestmark = pytest.mark.e2e

# Most faults are one process's business; the tests that take `start_on_each` cover state that
# crosses processes in split mode (negative cache, rate-limit budget and Retry-After in Redis,
# the upstreams API in the auth service) on both topologies.
TOPOLOGIES = ("embedded", "split")

STALE = '110 - "Response is Stale"'
# Revalidate every pull (so each fault is noticed), time out fast, and keep the breaker out of
# the way unless a test is about it.
BASE_ENV = {
    "DPROXY_MANIFEST_REVALIDATE_AFTER": "0",
    "DPROXY_UPSTREAM_READ_TIMEOUT": "1",
    "DPROXY_BREAKER_FAILURES": "1000",
}


@pytest.fixture
def fault(upstream: UpstreamRegistry) -> Iterator[FaultUpstream]:
    proxy = FaultUpstream(upstream.url).start()
    yield proxy
    proxy.stop()


def start(tmp_path: Path, fault: FaultUpstream, **env: str) -> DproxyServer:
    return start_dproxy(tmp_path / "dproxy", fault.url, env={**BASE_ENV, **env})


StartOnEach = Callable[..., DproxyServer]


@pytest.fixture
def start_on_each(
    dproxy_factory: DproxyFactory, fault: FaultUpstream, tmp_path: Path
) -> StartOnEach:
    def make(**env: str) -> DproxyServer:
        return dproxy_factory(tmp_path / "dproxy", fault.url, env={**BASE_ENV, **env})

    return make


def get_manifest(
    dproxy: DproxyServer, images: Images, reference: str = "latest", method: str = "GET"
) -> httpx.Response:
    return httpx.request(
        method,
        manifest_url(dproxy, "alpine", reference),
        headers={**bearer(dproxy, "alpine"), "Accept": images.oci.media_type},
        timeout=30,
    )


def error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


MANIFEST_FAULTS = [
    pytest.param({"kind": "status", "status": 429, "headers": {"Retry-After": "7"}},
                 429, "TOOMANYREQUESTS", id="429"),
    pytest.param({"kind": "status", "status": 500}, 502, "BAD_GATEWAY", id="500"),
    pytest.param({"kind": "status", "status": 503}, 502, "BAD_GATEWAY", id="503"),
    pytest.param({"kind": "delay", "delay": 2.5}, 504, "GATEWAY_TIMEOUT", id="timeout"),
    pytest.param({"kind": "status", "status": 401}, 404, "MANIFEST_UNKNOWN", id="401"),
    pytest.param({"kind": "status", "status": 403}, 404, "MANIFEST_UNKNOWN", id="403"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "status", "code"), MANIFEST_FAULTS)
def test_manifest_fault_with_and_without_a_cached_copy(
    fault: FaultUpstream,
    images: Images,
    tmp_path: Path,
    spec: dict[str, object],
    status: int,
    code: str,
) -> None:
    dproxy = start(tmp_path, fault, DPROXY_NEGATIVE_CACHE_SECONDS="0")
    try:
        fault.inject(match="/manifests/", **spec)
        missing = get_manifest(dproxy, images)
        assert missing.status_code == status
        assert error_code(missing) == code
        if status == 429:
            assert missing.headers["retry-after"] == "7"
        assert dproxy.api("GET", f"/groups/{GROUP}/dependency_proxy")["image_count"] == 0

        fault.clear()
        fresh = get_manifest(dproxy, images)
        assert fresh.status_code == 200 and "warning" not in fresh.headers

        fault.inject(match="/manifests/", **spec)
        for method in ("GET", "HEAD"):
            stale = get_manifest(dproxy, images, method=method)
            assert stale.status_code == 200, stale.text
            assert stale.headers["warning"] == STALE
            assert stale.headers["docker-content-digest"] == images.oci.digest
        assert get_manifest(dproxy, images).content == images.oci.manifest
    finally:
        dproxy.stop()


def test_connection_errors_serve_stale_or_502(
    fault: FaultUpstream, images: Images, tmp_path: Path
) -> None:
    dproxy = start(tmp_path, fault)
    try:
        assert get_manifest(dproxy, images).status_code == 200
        fault.stop()  # nothing listens on the upstream's port any more
        stale = get_manifest(dproxy, images)
        assert stale.status_code == 200 and stale.headers["warning"] == STALE
        missing = get_manifest(dproxy, images, reference="other")
        assert missing.status_code == 502 and error_code(missing) == "BAD_GATEWAY"
    finally:
        dproxy.stop()


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        pytest.param({"kind": "reset"}, None, id="reset-mid-blob"),
        pytest.param({"kind": "corrupt"}, None, id="wrong-bytes"),
        pytest.param({"kind": "status", "status": 500}, 502, id="500"),
        pytest.param({"kind": "delay", "delay": 2.5}, 504, id="timeout"),
    ],
)
def test_blob_faults_never_store_bad_bytes(
    fault: FaultUpstream,
    images: Images,
    tmp_path: Path,
    spec: dict[str, object],
    status: int | None,
) -> None:
    dproxy = start(tmp_path, fault)
    layer = max(images.oci.layers, key=lambda b: b.size)
    url = blob_url(dproxy, "alpine", layer.digest)
    headers = bearer(dproxy, "alpine")
    try:
        fault.inject(match="/blobs/", **spec)
        # Once the body started, a failure can only show as an aborted transfer.
        try:
            with httpx.stream("GET", url, headers=headers, timeout=30) as response:
                body = response.read()
        except httpx.HTTPError:
            assert status is None
        else:
            assert response.status_code == (status or 502)
            assert hashlib.sha256(body).hexdigest() != layer.hex
        time.sleep(0.2)
        assert dproxy.stored_blob(layer.digest) is None
        fault.clear()
        good = httpx.get(url, headers=headers, timeout=30)
        assert hashlib.sha256(good.content).hexdigest() == layer.hex
        stored = dproxy.stored_blob(layer.digest)
        assert stored is not None and hashlib.sha256(stored).hexdigest() == layer.hex
    finally:
        dproxy.stop()


def test_a_slow_upstream_that_keeps_sending_is_not_a_timeout(
    fault: FaultUpstream, images: Images, tmp_path: Path
) -> None:
    dproxy = start(tmp_path, fault)
    layer = min(images.oci.layers, key=lambda b: b.size)
    try:
        fault.inject("drip", match="/blobs/", chunk=max(layer.size // 8, 1), delay=0.2)
        body = httpx.get(
            blob_url(dproxy, "alpine", layer.digest), headers=bearer(dproxy, "alpine"), timeout=30
        ).content
        assert hashlib.sha256(body).hexdigest() == layer.hex
        assert dproxy.stored_blob(layer.digest) == body
    finally:
        dproxy.stop()


@pytest.mark.parametrize(
    ("stale_if_missing", "served"), [("0", True), ("1", False)], ids=["keep", "drop-after-1s"]
)
def test_upstream_404_for_a_cached_tag(
    fault: FaultUpstream, images: Images, tmp_path: Path, stale_if_missing: str, served: bool
) -> None:
    dproxy = start(tmp_path, fault, DPROXY_STALE_IF_MISSING=stale_if_missing)
    try:
        assert get_manifest(dproxy, images).status_code == 200
        fault.inject("status", status=404, match="/manifests/")
        time.sleep(1.2)
        response = get_manifest(dproxy, images)
        if served:
            assert response.status_code == 200 and response.headers["warning"] == STALE
        else:
            assert response.status_code == 404 and error_code(response) == "MANIFEST_UNKNOWN"
        # A digest reference stays servable: it never asks upstream.
        by_digest = get_manifest(dproxy, images, reference=images.oci.digest)
        assert by_digest.status_code == 200
    finally:
        dproxy.stop()


def test_docker_hub_401_for_a_missing_repository(
    fault: FaultUpstream, images: Images, tmp_path: Path
) -> None:
    dproxy = start(tmp_path, fault)
    try:
        fault.inject("missing401")
        for method in ("GET", "HEAD"):
            response = httpx.request(
                method,
                manifest_url(dproxy, "nosuchimage", "latest"),
                headers=bearer(dproxy, "nosuchimage"),
            )
            assert response.status_code == 404
        blob = httpx.head(
            blob_url(dproxy, "nosuchimage", images.oci.layers[0].digest),
            headers=bearer(dproxy, "nosuchimage"),
        )
        assert blob.status_code == 404
    finally:
        dproxy.stop()


def test_a_burst_of_pulls_of_a_missing_tag_costs_one_upstream_request(
    fault: FaultUpstream, images: Images, start_on_each: StartOnEach
) -> None:
    dproxy = start_on_each()
    try:
        headers = {**bearer(dproxy, "alpine"), "Accept": images.oci.media_type}
        url = manifest_url(dproxy, "alpine", "no-such-tag")
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: httpx.get(url, headers=headers), range(20)))
        assert {a.status_code for a in answers} == {404}
        assert {error_code(a) for a in answers} == {"MANIFEST_UNKNOWN"}
        for method in ("GET", "HEAD"):
            assert httpx.request(method, url, headers=headers).status_code == 404
        assert fault.count("GET", "/manifests/no-such-tag") == 1
        assert fault.count("HEAD", "/manifests/no-such-tag") == 0
    finally:
        dproxy.stop()


def test_the_circuit_breaker_opens_and_recovers(
    fault: FaultUpstream, images: Images, start_on_each: StartOnEach
) -> None:
    dproxy = start_on_each(
        DPROXY_BREAKER_FAILURES="3",
        DPROXY_BREAKER_COOLDOWN="2",
        DPROXY_NEGATIVE_CACHE_SECONDS="0",
    )
    try:
        assert get_manifest(dproxy, images).status_code == 200  # cached: alpine:latest
        fault.inject("status", status=500)
        fault.reset_log()
        for _ in range(3):
            assert get_manifest(dproxy, images, reference="other").status_code == 502
        assert len(fault.requests) == 3
        # Open: no upstream call. Uncached fails fast, cached is served stale.
        fast = get_manifest(dproxy, images, reference="other")
        assert fast.status_code == 503 and error_code(fast) == "UNAVAILABLE"
        assert int(fast.headers["retry-after"]) >= 1
        stale = get_manifest(dproxy, images)
        assert stale.status_code == 200 and stale.headers["warning"] == STALE
        assert len(fault.requests) == 3
        metrics = dproxy.metrics()
        assert "dproxy_upstream_circuit_open{" in metrics
        # After the cool-down one probe goes through; it succeeds and closes the breaker.
        fault.clear()
        time.sleep(2.2)
        recovered = get_manifest(dproxy, images)
        assert recovered.status_code == 200 and "warning" not in recovered.headers
        assert get_manifest(dproxy, images, reference="other").status_code == 404
    finally:
        dproxy.stop()


def test_a_matching_head_never_turns_into_a_get(
    fault: FaultUpstream, images: Images, tmp_path: Path
) -> None:
    dproxy = start(tmp_path, fault)
    try:
        assert get_manifest(dproxy, images).status_code == 200
        fault.reset_log()
        for _ in range(3):
            assert get_manifest(dproxy, images).status_code == 200
        assert fault.count("HEAD", "/manifests/latest") == 3
        assert fault.count("GET", "/manifests/") == 0
    finally:
        dproxy.stop()


def test_low_rate_limit_budget_serves_cached_tags_without_upstream(
    fault: FaultUpstream, images: Images, start_on_each: StartOnEach
) -> None:
    dproxy = start_on_each()
    try:
        fault.ratelimit = {
            "ratelimit-limit": "100;w=21600",
            "ratelimit-remaining": "5;w=21600",
            "docker-ratelimit-source": "192.0.2.7",
        }
        assert get_manifest(dproxy, images).status_code == 200
        fault.reset_log()
        for method in ("GET", "HEAD"):
            saved = get_manifest(dproxy, images, method=method)
            assert saved.status_code == 200 and saved.headers["warning"] == STALE
        assert fault.requests == []
        # What is not cached still goes upstream.
        assert get_manifest(dproxy, images, reference=images.oci.digest).status_code == 200

        (upstream,) = dproxy.api("GET", "/dependency_proxy/upstreams")
        assert upstream["url"] == fault.url
        assert upstream["ratelimit_limit"] == 100
        assert upstream["ratelimit_remaining"] == 5
        assert upstream["ratelimit_window"] == 21600
        assert upstream["ratelimit_source"] == "192.0.2.7"
        assert upstream["budget_low"] is True
        assert upstream["budget_low_for"] > 21000
        metrics = dproxy.metrics()
        host = fault.url.removeprefix("http://")
        assert f'dproxy_upstream_ratelimit_remaining{{host="{host}"}} 5.0' in metrics
        assert f'dproxy_upstream_ratelimit_limit{{host="{host}"}} 100.0' in metrics

        # Only administrators see it.
        alice = dproxy.api(
            "POST",
            f"/users/{dproxy.user_ids[USER[0]]}/personal_access_tokens",
            {"name": "t", "scopes": ["api"]},
        )
        assert isinstance(alice, dict)
        denied = httpx.get(
            f"{dproxy.api_url}/dependency_proxy/upstreams",
            headers={"PRIVATE-TOKEN": alice["token"]},
        )
        assert denied.status_code == 403
    finally:
        dproxy.stop()


def test_retry_after_holds_revalidation_until_it_passes(
    fault: FaultUpstream, images: Images, start_on_each: StartOnEach
) -> None:
    dproxy = start_on_each()
    try:
        assert get_manifest(dproxy, images).status_code == 200
        fault.inject("status", status=429, headers={"Retry-After": "2"}, times=1)
        assert get_manifest(dproxy, images).headers["warning"] == STALE  # the 429 itself
        fault.reset_log()
        assert get_manifest(dproxy, images).headers["warning"] == STALE
        assert fault.requests == []
        time.sleep(2.2)
        revalidated = get_manifest(dproxy, images)
        assert revalidated.status_code == 200 and "warning" not in revalidated.headers
        assert fault.count("HEAD", "/manifests/latest") == 1
    finally:
        dproxy.stop()
