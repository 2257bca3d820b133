"""The contract between the registry and the fetcher (an in-process call or HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.reference import ImageName, Reference


@dataclass(frozen=True, slots=True)
class ManifestResult:
    digest: str
    media_type: str
    size: int
    body: bytes | None  # None answers a HEAD
    stale: bool = False  # served from cache because upstream failed


@dataclass(frozen=True, slots=True)
class BlobResult:
    digest: str
    size: int | None  # None when upstream did not say
    chunks: AsyncIterator[bytes] | None  # None answers a HEAD


class Fetcher(Protocol):
    """Raises `RegistryError` for anything the client should see as an error."""

    async def manifest(
        self, *, group_id: int, name: ImageName, reference: Reference, head: bool, token: str
    ) -> ManifestResult: ...

    async def blob(
        self, *, group_id: int, name: ImageName, digest: Digest, head: bool, token: str
    ) -> BlobResult: ...
