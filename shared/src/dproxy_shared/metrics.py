"""Prometheus metrics shared by the services (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
NEGATIVE_CACHE_HITS = Counter(
    "dproxy_negative_cache_hits_total", "Requests answered from the upstream-404 negative cache"
)
UPSTREAM_RATELIMIT_REMAINING = Gauge(
    "dproxy_upstream_ratelimit_remaining",
    "Pulls left in the upstream's rate-limit window (last ratelimit-remaining header)",
    ["host"],
)
UPSTREAM_RATELIMIT_LIMIT = Gauge(
    "dproxy_upstream_ratelimit_limit",
    "The upstream's pull limit per window (last ratelimit-limit header)",
    ["host"],
)
UPSTREAM_RATELIMIT_WINDOW = Gauge(
    "dproxy_upstream_ratelimit_window_seconds", "The upstream's rate-limit window", ["host"]
)
UPSTREAM_CIRCUIT_OPEN = Gauge(
    "dproxy_upstream_circuit_open", "1 while the upstream's circuit breaker is open", ["host"]
)
CLEANUP_DELETIONS = Counter(
    "dproxy_cleanup_deletions_total",
    "What the cache cleanup deleted: manifest and blob rows, storage objects",
    ["kind"],
)
