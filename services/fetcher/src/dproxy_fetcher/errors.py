"""Upstream answers and failures, translated into what the registry client should see."""

from __future__ import annotations

import httpx

from dproxy_fetcher.upstream import UpstreamError
from dproxy_shared.oci.errors import ErrorCode, RegistryError


def from_upstream_error(exc: UpstreamError, what: str) -> RegistryError:
    if exc.kind == "timeout":
        return RegistryError(ErrorCode.GATEWAY_TIMEOUT, f"upstream timed out fetching {what}")
    if exc.kind == "connect":
        return RegistryError(ErrorCode.BAD_GATEWAY, f"upstream unreachable fetching {what}")
    if exc.kind == "open":
        # Fail fast while the breaker is open, and say when to come back.
        headers = {"Retry-After": exc.retry_after} if exc.retry_after else {}
        return RegistryError(
            ErrorCode.UNAVAILABLE,
            f"upstream is failing, not contacted for {what} (circuit breaker open); retry later",
            headers=headers,
        )
    if exc.status == 429:
        return _too_many(exc.retry_after, what)
    return RegistryError(ErrorCode.BAD_GATEWAY, f"upstream failed fetching {what}: {exc}")


def from_upstream_status(response: httpx.Response, what: str, unknown: ErrorCode) -> RegistryError:
    status = response.status_code
    if status == 404:
        return RegistryError(unknown, f"{what} not found upstream")
    if status in (401, 403):
        # Docker Hub answers 401 rather than 404 for repositories that do not exist.
        return RegistryError(
            unknown,
            f"upstream refused {what}: the image may not exist, or it is private and the "
            "upstream credentials cannot read it",
        )
    if status == 429:
        return _too_many(response.headers.get("retry-after"), what)
    return RegistryError(ErrorCode.BAD_GATEWAY, f"upstream answered {status} for {what}")


def _too_many(retry_after: str | None, what: str) -> RegistryError:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return RegistryError(
        ErrorCode.TOOMANYREQUESTS,
        f"upstream rate limit reached fetching {what}, and it is not cached",
        headers=headers,
    )
