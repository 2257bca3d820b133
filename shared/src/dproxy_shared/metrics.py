"""Prometheus metrics shared by the services (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter

CACHE_REQUESTS = Counter(
    "dproxy_cache_requests_total", "Registry requests by kind and result", ["kind", "result"]
)
BYTES_SERVED = Counter(
    "dproxy_bytes_served_total", "Blob bytes sent to clients by source", ["source"]
)
UPSTREAM_REQUESTS = Counter(
    "dproxy_upstream_requests_total",
    "Requests to upstream registries",
    ["host", "method", "status"],
)
COALESCED = Counter(
    "dproxy_coalesced_followers_total", "Requests that joined an in-flight fetch", ["kind"]
)
DIGEST_MISMATCHES = Counter(
    "dproxy_digest_mismatches_total", "Upstream content that did not match its digest"
)
STALE_SERVES = Counter("dproxy_stale_serves_total", "Cached manifests served stale", ["reason"])
