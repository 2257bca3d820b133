"""The circuit breaker's states and the rate-limit header parsing and budget."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dproxy_fetcher.breaker import CircuitBreaker, CircuitOpen
from dproxy_shared import ratelimit
from dproxy_shared.coordination import MemoryCache
from dproxy_shared.crypto import SecretBox
from dproxy_shared.settings import Settings


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    breaker = CircuitBreaker("hub", failures=3, cooldown=0.2)
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive any more
    breaker.failure()
    breaker.failure()
    breaker.check()
    breaker.failure()
    with pytest.raises(CircuitOpen) as refused:
        breaker.check()
    assert 0 < refused.value.retry_after <= 0.2
    time.sleep(0.25)
    breaker.check()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.check()  # only one at a time
    breaker.failure()  # the probe failed: open again
    with pytest.raises(CircuitOpen):
        breaker.check()
    time.sleep(0.25)
    breaker.check()
    breaker.success()
    assert not breaker.is_open
    breaker.check()


def test_ratelimit_headers_are_parsed() -> None:
    state = ratelimit.parse(
        "hub",
        200,
        {
            "ratelimit-limit": "100;w=21600",
            "ratelimit-remaining": "76;w=21600",
            "docker-ratelimit-source": "192.0.2.1",
        },
    )
    assert state is not None
    assert (state.limit, state.remaining, state.window_seconds) == (100, 76, 21600)
    assert state.source == "192.0.2.1" and state.retry_after_seconds is None
    assert ratelimit.parse("hub", 200, {}) is None  # no headers: no limit
    assert ratelimit.parse("hub", 200, {"ratelimit-remaining": "junk"}) is None
    limited = ratelimit.parse("hub", 429, {"retry-after": "30"})
    assert limited is not None and limited.retry_after_seconds == 30
    assert ratelimit.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0


async def test_budget_goes_low_under_the_reserve_and_recovers() -> None:
    cache = MemoryCache()
    budget = ratelimit.RateLimitBudget(cache, "hub", reserve=10)
    await budget.record(200, {"ratelimit-remaining": "50;w=60"})
    assert not await budget.low()
    await budget.record(200, {"ratelimit-remaining": "9;w=60"})
    assert await budget.low()
    state, low_for = await ratelimit.snapshot(cache, "hub")
    assert state is not None and state.remaining == 9
    assert low_for is not None and 59 < low_for <= 60
    await budget.record(200, {"ratelimit-remaining": "80;w=60"})  # the window was reset
    assert not await budget.low()
    await budget.record(429, {"retry-after": "5"})
    assert await budget.low()


def test_secrets_round_trip_with_a_generated_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    sealed = SecretBox(settings).encrypt("hunter2")
    assert "hunter2" not in sealed
    assert SecretBox(Settings(data_dir=tmp_path)).decrypt(sealed) == "hunter2"
    other = Settings(data_dir=tmp_path, encryption_key="A" * 43 + "=")
    with pytest.raises(ValueError, match="DPROXY_ENCRYPTION_KEY"):
        SecretBox(other).decrypt(sealed)
