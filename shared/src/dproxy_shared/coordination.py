"""Small shared state between requests and replicas: a TTL cache, leases and notifications.

The embedded default uses the in-process implementations below; the production topology
swaps in Redis-backed ones with the same interfaces, so callers never know which they have.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol


class KeyValueCache(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl: float) -> None: ...
    async def delete(self, key: str) -> None: ...

    async def incr(self, key: str, ttl: float) -> int:
        """Add one; a new counter expires `ttl` seconds after its first increment."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until the key expires, or None when it does not exist."""
        ...


class Lease(Protocol):
    """Exclusive ownership of a name until released or expired."""

    @property
    def fence(self) -> int:
        """Increases with every grant of the name: lets storage refuse a stale holder."""
        ...

    async def renew(self) -> bool: ...
    async def release(self) -> None: ...


class Locks(Protocol):
    async def try_acquire(self, name: str, ttl: float) -> Lease | None: ...


class Notifier(Protocol):
    async def publish(self, channel: str, message: str) -> None: ...

    async def wait(self, channel: str, timeout: float) -> str | None:
        """The next message on `channel`, or None after `timeout` seconds."""
        ...


@dataclass
class Coordination:
    cache: KeyValueCache
    locks: Locks
    notifier: Notifier

    @classmethod
    def in_process(cls) -> Coordination:
        return cls(MemoryCache(), MemoryLocks(), MemoryNotifier())


class MemoryCache:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> str | None:
        entry = self._live(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._entries[key] = (time.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        self._trim()

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def incr(self, key: str, ttl: float) -> int:
        entry = self._live(key)
        count = int(entry[1]) + 1 if entry else 1
        expires = entry[0] if entry else time.monotonic() + ttl
        self._entries[key] = (expires, str(count))
        self._entries.move_to_end(key)
        self._trim()
        return count

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        return entry[0] - time.monotonic() if entry else None

    def _live(self, key: str) -> tuple[float, str] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry

    def _trim(self) -> None:
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


@dataclass
class _MemoryLease:
    locks: MemoryLocks
    name: str
    fence: int
    ttl: float

    async def renew(self) -> bool:
        return self.locks._renew(self)

    async def release(self) -> None:
        self.locks._release(self)


@dataclass
class MemoryLocks:
    _held: dict[str, tuple[int, float]] = field(default_factory=dict)
    _fences: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def try_acquire(self, name: str, ttl: float) -> Lease | None:
        now = time.monotonic()
        held = self._held.get(name)
        if held is not None and held[1] > now:
            return None
        fence = next(self._fences)
        self._held[name] = (fence, now + ttl)
        return _MemoryLease(self, name, fence, ttl)

    def _renew(self, lease: _MemoryLease) -> bool:
        held = self._held.get(lease.name)
        if held is None or held[0] != lease.fence:
            return False
        self._held[lease.name] = (lease.fence, time.monotonic() + lease.ttl)
        return True

    def _release(self, lease: _MemoryLease) -> None:
        held = self._held.get(lease.name)
        if held is not None and held[0] == lease.fence:
            del self._held[lease.name]


class MemoryNotifier:
    def __init__(self) -> None:
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}

    async def publish(self, channel: str, message: str) -> None:
        for waiter in self._waiters.pop(channel, []):
            if not waiter.done():
                waiter.set_result(message)

    async def wait(self, channel: str, timeout: float) -> str | None:
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(channel)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[channel]
