"""The coordination primitives (TTL cache, counters, leases, notifications), in process and
on Redis: the same behaviour from both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dproxy_shared.coordination import Coordination, MemoryCache
from dproxy_shared.coordination_redis import redis_coordination


@pytest.fixture(params=["memory", "redis"])
async def coordination(request: pytest.FixtureRequest) -> AsyncIterator[Coordination]:
    if request.param == "memory":
        yield Coordination.in_process()
        return
    url: str = request.getfixturevalue("redis_url")
    coordination, client = redis_coordination(url)
    await client.flushdb()
    yield coordination
    await client.aclose()


async def test_cache_values_expire(coordination: Coordination) -> None:
    cache = coordination.cache
    await cache.set("k", "v", ttl=0.2)
    assert await cache.get("k") == "v"
    assert 0 < (await cache.ttl("k") or 0) <= 0.2
    await asyncio.sleep(0.25)
    assert await cache.get("k") is None
    assert await cache.ttl("k") is None
    await cache.set("gone", "v", ttl=60)
    await cache.delete("gone")
    assert await cache.get("gone") is None


async def test_counters_count_within_their_window_then_start_over(
    coordination: Coordination,
) -> None:
    cache = coordination.cache
    assert [await cache.incr("c", ttl=0.2) for _ in range(3)] == [1, 2, 3]
    await asyncio.sleep(0.25)
    assert await cache.incr("c", ttl=0.2) == 1


async def test_memory_cache_keeps_at_most_max_entries() -> None:
    cache = MemoryCache(max_entries=2)
    for key in "abc":
        await cache.set(key, key, ttl=60)
    assert [await cache.get(k) for k in "abc"] == [None, "b", "c"]


async def test_a_lease_is_exclusive_until_released_or_expired(coordination: Coordination) -> None:
    locks = coordination.locks
    first = await locks.try_acquire("fill:x", ttl=0.2)
    assert first is not None
    assert await locks.try_acquire("fill:x", ttl=0.2) is None
    await asyncio.sleep(0.25)  # the holder stopped renewing: it expired
    second = await locks.try_acquire("fill:x", ttl=60)
    assert second is not None and second.fence > first.fence
    assert not await first.renew(), "a stale holder cannot renew"
    await first.release()  # and cannot release the new holder's lease
    assert await locks.try_acquire("fill:x", ttl=60) is None
    assert await second.renew()
    await second.release()
    assert await locks.try_acquire("fill:x", ttl=60) is not None


async def test_waiters_get_the_published_message_or_time_out(coordination: Coordination) -> None:
    notifier = coordination.notifier
    waiter = asyncio.create_task(notifier.wait("filled:x", timeout=5))
    await asyncio.sleep(0.1)  # subscribed before the publish
    await notifier.publish("filled:x", "ok")
    assert await waiter == "ok"
    assert await notifier.wait("filled:y", timeout=0.05) is None
