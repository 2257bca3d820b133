"""Password hashing (Argon2id). Hashing is deliberately slow, so it runs off the event loop."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's Argon2id profile (19 MiB, 2 passes, 1 lane): library defaults take 64 MiB per
# verification, which several concurrent logins turn into hundreds of MiB of peak memory.
# Hashes record their parameters, so existing ones keep verifying if these change.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user does not exist, so that the answer takes as long either way."""
    return _hasher.hash("dproxy-timing-equaliser")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


class PasswordVerifier:
    """Checks passwords, remembering recent successes for a short while.

    Docker clients send the password with every token request, and one Argon2 verification
    costs ~100 ms of CPU; a burst of CI pulls would spend most of its time there. A success is
    remembered (in this process only, keyed by a hash that includes the stored password hash,
    so a password change invalidates it) for `ttl` seconds. Failures are never remembered.
    """

    def __init__(self, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._verified: OrderedDict[str, float] = OrderedDict()

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            await asyncio.to_thread(_verify, _dummy_hash(), password)
            return False
        key = hashlib.sha256(f"{password_hash}\0{password}".encode()).hexdigest()
        expires = self._verified.get(key)
        if expires is not None and expires > time.monotonic():
            return True
        if not await asyncio.to_thread(_verify, password_hash, password):
            return False
        self._verified[key] = time.monotonic() + self._ttl
        self._verified.move_to_end(key)
        while len(self._verified) > self._max:
            self._verified.popitem(last=False)
        return True


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
