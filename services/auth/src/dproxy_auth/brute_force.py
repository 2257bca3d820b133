"""Brute-force protection: too many failed logins from one address ban it for a while.

GitLab's defaults: 30 failures within 3 minutes ban the address for an hour. Counters and bans
live in the shared cache, so every replica sees the same ban once Redis is in.
"""

from __future__ import annotations

import math

from dproxy_auth.errors import ApiError
from dproxy_shared.runtime import Runtime


class BruteForceGuard:
    def __init__(self, runtime: Runtime, address: str) -> None:
        self._cache = runtime.coordination.cache
        self._settings = runtime.settings
        self._address = address

    @property
    def _ban_key(self) -> str:
        return f"auth-ban:{self._address}"

    async def refuse_if_banned(self) -> None:
        remaining = await self._cache.ttl(self._ban_key)
        if remaining is not None:
            raise ApiError(
                429,
                "Too many failed authentication attempts from this address; try again later",
                headers={"Retry-After": str(max(1, math.ceil(remaining)))},
            )

    async def record_failure(self) -> None:
        failures = await self._cache.incr(
            f"auth-failures:{self._address}", ttl=self._settings.auth_failure_window
        )
        if failures >= self._settings.auth_failure_limit:
            await self._cache.set(self._ban_key, "1", ttl=self._settings.auth_ban_seconds)
