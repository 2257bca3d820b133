"""The upstream's rate-limit budget, read from the headers of every upstream answer.

Docker Hub sends `ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 20;w=21600` and
`docker-ratelimit-source` on GETs and HEADs, and `Retry-After` with a 429. No headers means
no limit. The last values are kept in the shared cache per upstream host (`ratelimit:<host>`),
so every replica, and the management API, see the same numbers. When the remaining pulls fall
under the reserve, or upstream asked us to retry later, a `ratelimit-low:<host>` key lives
until the window resets (or Retry-After passes): meanwhile cached tags are served without
revalidation.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime

from dproxy_shared.coordination import KeyValueCache
from dproxy_shared.metrics import (
    UPSTREAM_RATELIMIT_LIMIT,
    UPSTREAM_RATELIMIT_REMAINING,
    UPSTREAM_RATELIMIT_WINDOW,
)

# How long a 429 without Retry-After, or a low budget without a window, holds off revalidation.
DEFAULT_HOLD_SECONDS = 60.0
# How long the last observed numbers are shown when upstream stops sending them.
SNAPSHOT_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RateLimitState:
    host: str
    limit: int | None
    remaining: int | None
    window_seconds: int | None
    source: str | None
    retry_after_seconds: float | None
    observed_at: float  # Unix time of the upstream answer


def _count_and_window(value: str | None) -> tuple[int | None, int | None]:
    """`100;w=21600` → (100, 21600); `100` → (100, None); junk → (None, None)."""
    if not value:
        return None, None
    count, *params = (part.strip() for part in value.split(";"))
    window = None
    for param in params:
        key, _, raw = param.partition("=")
        if key.strip() == "w" and raw.strip().isdigit():
            window = int(raw.strip())
    return (int(count) if count.isdigit() else None), window


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def parse(host: str, status: int, headers: Mapping[str, str]) -> RateLimitState | None:
    """The rate-limit facts of one answer, or None when it carries none."""
    limit, limit_window = _count_and_window(headers.get("ratelimit-limit"))
    remaining, remaining_window = _count_and_window(headers.get("ratelimit-remaining"))
    retry_after = retry_after_seconds(headers.get("retry-after")) if status in (429, 503) else None
    if limit is None and remaining is None and retry_after is None and status != 429:
        return None
    return RateLimitState(
        host=host,
        limit=limit,
        remaining=remaining,
        window_seconds=remaining_window or limit_window,
        source=headers.get("docker-ratelimit-source"),
        retry_after_seconds=retry_after,
        observed_at=time.time(),
    )


def _state_key(host: str) -> str:
    return f"ratelimit:{host}"


def _low_key(host: str) -> str:
    return f"ratelimit-low:{host}"


class RateLimitBudget:
    """Records what one upstream host says about its limits; answers whether to save pulls."""

    def __init__(self, cache: KeyValueCache, host: str, reserve: int) -> None:
        self._cache = cache
        self.host = host
        self._reserve = reserve

    async def record(self, status: int, headers: Mapping[str, str]) -> None:
        state = parse(self.host, status, headers)
        if state is None:
            return
        if state.remaining is not None:
            UPSTREAM_RATELIMIT_REMAINING.labels(self.host).set(state.remaining)
        if state.limit is not None:
            UPSTREAM_RATELIMIT_LIMIT.labels(self.host).set(state.limit)
        if state.window_seconds is not None:
            UPSTREAM_RATELIMIT_WINDOW.labels(self.host).set(state.window_seconds)
        await self._cache.set(_state_key(self.host), json.dumps(asdict(state)), SNAPSHOT_SECONDS)
        if status == 429 or state.retry_after_seconds is not None:
            hold = state.retry_after_seconds or state.window_seconds or DEFAULT_HOLD_SECONDS
            await self._cache.set(_low_key(self.host), "retry-after", max(hold, 1.0))
        elif state.remaining is not None and state.remaining < self._reserve:
            hold = state.window_seconds or DEFAULT_HOLD_SECONDS
            await self._cache.set(_low_key(self.host), "reserve", float(hold))
        elif state.remaining is not None:
            await self._cache.delete(_low_key(self.host))

    async def low(self) -> bool:
        """True while cached tags should be served without asking upstream."""
        return await self._cache.get(_low_key(self.host)) is not None


async def snapshot(cache: KeyValueCache, host: str) -> tuple[RateLimitState | None, float | None]:
    """The last observed state of `host`, and the seconds the low-budget hold still lasts."""
    raw = await cache.get(_state_key(host))
    state = None
    if raw is not None:
        with contextlib.suppress(ValueError, TypeError):
            state = RateLimitState(**json.loads(raw))
    return state, await cache.ttl(_low_key(host))
