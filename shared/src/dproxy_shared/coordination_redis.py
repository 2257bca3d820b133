"""Redis implementations of the coordination interfaces, shared by every replica.

- Cache: plain keys with expiry; counters with INCR and an expiry set on the first increment.
- Leases: `SET name token NX PX ttl`; the token carries a fencing number from a per-name
  INCR, renew and release only act while the key still holds our token (Lua, atomic), so a
  holder whose lease expired can neither extend nor free the next holder's lease.
- Notifications: pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from dproxy_shared.coordination import Coordination, Lease

PREFIX = "dproxy:"

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
_INCR = """
local count = redis.call('incr', KEYS[1])
if count == 1 then redis.call('pexpire', KEYS[1], ARGV[1]) end
return count
"""


def redis_coordination(url: str) -> tuple[Coordination, Redis]:
    client = Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_keepalive=True,
        client_name="dproxy",
    )
    return Coordination(RedisCache(client), RedisLocks(client), RedisNotifier(client)), client


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisCache:
    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._incr = client.register_script(_INCR)

    async def get(self, key: str) -> str | None:
        value = await self._redis.get(PREFIX + key)
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._redis.set(PREFIX + key, value, px=_ms(ttl))

    async def delete(self, key: str) -> None:
        await self._redis.delete(PREFIX + key)

    async def incr(self, key: str, ttl: float) -> int:
        return int(await self._incr(keys=[PREFIX + key], args=[_ms(ttl)]))

    async def ttl(self, key: str) -> float | None:
        remaining = int(await self._redis.pttl(PREFIX + key))
        return None if remaining < 0 else remaining / 1000


@dataclass
class _RedisLease:
    locks: RedisLocks
    key: str
    token: str
    fence: int
    ttl: float

    async def renew(self) -> bool:
        return bool(await self.locks._renew(keys=[self.key], args=[self.token, _ms(self.ttl)]))

    async def release(self) -> None:
        await self.locks._release(keys=[self.key], args=[self.token])


class RedisLocks:
    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def try_acquire(self, name: str, ttl: float) -> Lease | None:
        key = f"{PREFIX}lease:{name}"
        fence = int(await self._redis.incr(f"{PREFIX}fence:{name}"))
        token = f"{fence}:{uuid.uuid4().hex}"
        if not await self._redis.set(key, token, nx=True, px=_ms(ttl)):
            return None
        return _RedisLease(self, key, token, fence, ttl)


class RedisNotifier:
    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def publish(self, channel: str, message: str) -> None:
        await self._redis.publish(PREFIX + channel, message)

    async def wait(self, channel: str, timeout: float) -> str | None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(PREFIX + channel)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while (remaining := deadline - loop.time()) > 0:
                message = await pubsub.get_message(timeout=remaining)
                if message is not None and message.get("type") == "message":
                    return str(message["data"])
            return None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]
