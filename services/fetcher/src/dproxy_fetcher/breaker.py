"""A circuit breaker per upstream host, so an outage costs one timeout, not one per pull.

`failures` consecutive failures (timeout, connection error, 5xx) open it. While open, no
request reaches upstream: callers serve cached copies or fail fast (503 with Retry-After).
After `cooldown` seconds one probe goes through (half-open); its success closes the breaker,
its failure opens it for another cool-down. Any answer below 500 (404, 401, 429…) counts as
success: the host is up, and rate limits have their own handling.

The state lives in each fetcher process (every replica learns about an outage on its own,
after `failures` requests); it is small, needs no coordination and heals itself.
"""

from __future__ import annotations

import time

from dproxy_shared.metrics import UPSTREAM_CIRCUIT_OPEN


class CircuitOpen(Exception):
    def __init__(self, host: str, retry_after: float) -> None:
        super().__init__(f"{host}: circuit breaker open after repeated failures")
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(self, host: str, *, failures: int, cooldown: float) -> None:
        self.host = host
        self._threshold = failures
        self._cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def check(self) -> None:
        """Raise `CircuitOpen` unless a request may go upstream now."""
        if self._opened_at is None:
            return
        now = time.monotonic()
        reopen_at = self._opened_at + self._cooldown
        if now < reopen_at:
            raise CircuitOpen(self.host, reopen_at - now)
        # Half-open: one probe at a time; a probe that never reports frees the slot later.
        if self._probe_started is not None and now < self._probe_started + self._cooldown:
            raise CircuitOpen(self.host, self._probe_started + self._cooldown - now)
        self._probe_started = now

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_started = None
        UPSTREAM_CIRCUIT_OPEN.labels(self.host).set(0)

    def failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = time.monotonic()
            self._probe_started = None
            UPSTREAM_CIRCUIT_OPEN.labels(self.host).set(1)
