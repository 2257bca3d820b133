"""Split mode: the registry reaches the fetcher service over HTTP, streaming blobs through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from dproxy_shared.fetching import BlobResult, ManifestResult
from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.errors import ErrorCode, RegistryError, code_for_status
from dproxy_shared.oci.reference import ImageName, Reference

STALE_HEADER = "x-dproxy-stale"


class HttpFetcher:
    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self._base = base_url.rstrip("/")
        self._client = client

    async def manifest(
        self, *, group_id: int, name: ImageName, reference: Reference, head: bool, token: str
    ) -> ManifestResult:
        response = await self._call(
            "HEAD" if head else "GET",
            f"/fetcher/v1/groups/{group_id}/manifests",
            {"repository": name.repository, "reference": str(reference)},
            token,
            stream=False,
            unknown=ErrorCode.MANIFEST_UNKNOWN,
        )
        return ManifestResult(
            digest=response.headers["docker-content-digest"],
            media_type=response.headers["content-type"],
            size=int(response.headers["content-length"]),
            body=None if head else response.content,
            stale=response.headers.get(STALE_HEADER) == "1",
        )

    async def blob(
        self, *, group_id: int, name: ImageName, digest: Digest, head: bool, token: str
    ) -> BlobResult:
        response = await self._call(
            "HEAD" if head else "GET",
            f"/fetcher/v1/groups/{group_id}/blobs/{digest}",
            {"repository": name.repository},
            token,
            stream=not head,
            unknown=ErrorCode.BLOB_UNKNOWN,
        )
        length = response.headers.get("content-length", "")
        size = int(length) if length.isdigit() else None
        return BlobResult(str(digest), size, None if head else _relay(response))

    async def _call(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        token: str,
        *,
        stream: bool,
        unknown: ErrorCode,
    ) -> httpx.Response:
        request = self._client.build_request(
            method, self._base + path, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        try:
            try:
                response = await self._client.send(request, stream=stream)
            except httpx.RemoteProtocolError:
                # A pooled connection the fetcher closed (keep-alive expiry) just as it was
                # reused; GET and HEAD are idempotent, so once more on a fresh one.
                response = await self._client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise RegistryError(ErrorCode.GATEWAY_TIMEOUT, "the fetcher timed out") from exc
        except httpx.TransportError as exc:
            raise RegistryError(ErrorCode.BAD_GATEWAY, "the fetcher is unreachable") from exc
        if response.status_code < 400:
            return response
        body = await response.aread()
        await response.aclose()
        raise _error_from(response, body, unknown)


def _error_from(response: httpx.Response, body: bytes, unknown: ErrorCode) -> RegistryError:
    """Re-raise the fetcher's registry error as is (code, message, status, Retry-After)."""
    headers = (
        {"Retry-After": response.headers["retry-after"]}
        if "retry-after" in response.headers
        else {}
    )
    if response.request.method == "HEAD":
        # No body names the code; the status and headers are all the client's HEAD shows.
        code = code_for_status(response.status_code, unknown=unknown)
        return RegistryError(code, "", status=response.status_code, headers=headers)
    try:
        error: dict[str, Any] = httpx.Response(200, content=body).json()["errors"][0]
        code = ErrorCode(error["code"])
        return RegistryError(
            code,
            str(error.get("message", "")),
            detail=error.get("detail"),
            status=response.status_code,
            headers=headers,
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return RegistryError(
            ErrorCode.BAD_GATEWAY, f"the fetcher answered {response.status_code}", headers=headers
        )


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()
