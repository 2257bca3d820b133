"""One upstream download of a blob, shared by every client that wants it meanwhile.

The fill runs as its own task: it writes the upstream body into a `BlobWriter`, hashing as it
goes, and commits the object only if the digest matches. Clients never read the upstream
socket; they tail the writer. So a slow client cannot slow the download, a client that leaves
does not stop it, and any number of followers share one upstream GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from dproxy_shared.coordination import Lease
from dproxy_shared.metrics import DIGEST_MISMATCHES
from dproxy_shared.oci.digest import Digest
from dproxy_shared.storage import BlobWriter, DigestMismatch
from dproxy_shared.storage.base import CHUNK_SIZE

log = logging.getLogger(__name__)


class FillFailed(Exception):
    """The download did not produce the expected bytes; nothing was committed."""


class BlobFill:
    def __init__(
        self, digest: Digest, size: int | None, writer: BlobWriter, response: httpx.Response
    ) -> None:
        self.digest = digest
        self.size = size
        self._response = response
        self.group_ids: set[int] = set()
        self._writer = writer
        self._changed = asyncio.Event()
        self._done = False
        self._committed = False
        self._error: BaseException | None = None

    @property
    def written(self) -> int:
        return self._writer.size

    @property
    def succeeded(self) -> bool:
        return self._committed

    @property
    def failed(self) -> bool:
        return self._done and self._error is not None

    async def run(
        self,
        *,
        lease: Lease,
        lease_seconds: float,
        timeout: float,
        on_commit: Callable[[BlobFill], Awaitable[None]],
    ) -> None:
        renewer = asyncio.create_task(_keep_renewed(lease, every=lease_seconds / 3))
        try:
            async with asyncio.timeout(timeout):
                async for chunk in self._response.aiter_raw(CHUNK_SIZE):
                    await self._writer.write(chunk)
                    self._wake()
            if self.size is not None and self._writer.size != self.size:
                raise FillFailed(
                    f"{self.digest}: upstream sent {self._writer.size} of {self.size} bytes"
                )
            await self._writer.commit(self.digest)
            self._committed = True
            await on_commit(self)
        except DigestMismatch as exc:
            DIGEST_MISMATCHES.inc()
            log.warning("digest mismatch, not cached: %s", exc)
            self._error = FillFailed(str(exc))
        except Exception as exc:
            log.warning("fill of %s failed: %s: %s", self.digest, type(exc).__name__, exc)
            self._error = exc
        finally:
            if not self._committed and self._error is None:
                self._error = FillFailed(f"{self.digest}: download interrupted")
            renewer.cancel()
            await self._writer.abort()
            await self._response.aclose()
            self._done = True
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def stream(self) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive. Raises `FillFailed` if the fill fails.

        The last byte is held back until the digest is verified, so a client never receives
        a complete body with wrong content: it sees the connection fail instead.
        """
        offset = 0
        while True:
            changed = self._changed
            limit = self._writer.size
            if not self._done and self.size is not None:
                limit = min(limit, self.size - 1)
            if self._done and self._error is not None:
                raise FillFailed(f"{self.digest}: upstream download failed") from self._error
            if offset < limit:
                data = await self._writer.read_written(offset, min(CHUNK_SIZE, limit - offset))
                offset += len(data)
                yield data
                continue
            if self._done:
                return
            await changed.wait()


async def _keep_renewed(lease: Lease, every: float) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(every)
            if not await lease.renew():
                log.warning("lost the fill lease; another replica may start the same download")
                return
