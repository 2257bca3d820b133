"""The fetcher's internal HTTP API (split mode): what the registry calls on a cache miss.

Callers forward the client's registry JWT; the fetcher checks it like the registry does, so
the internal port grants nothing that `/v2` would not.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from dproxy_shared.fetching import Fetcher
from dproxy_shared.jwt_tokens import InvalidToken
from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.errors import ErrorCode, RegistryError
from dproxy_shared.oci.reference import ImageName, Reference
from dproxy_shared.runtime import Runtime, TokenVerifier

router = APIRouter(prefix="/fetcher/v1", include_in_schema=False)

STALE_HEADER = "X-Dproxy-Stale"


async def _authorize(request: Request, authorization: str | None, name: ImageName) -> str:
    runtime: Runtime = request.app.state.runtime
    verifier: TokenVerifier = request.app.state.verifier
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RegistryError(ErrorCode.UNAUTHORIZED, "a registry token is required")
    try:
        claims = await verifier.verify(token, issuer=runtime.settings.jwt_issuer)
    except InvalidToken as exc:
        raise RegistryError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from exc
    if not claims.allows(name.repository, "pull"):
        raise RegistryError(ErrorCode.DENIED, "the token does not grant pull on this repository")
    return token


@router.api_route("/groups/{group_id}/manifests", methods=["GET", "HEAD"])
async def manifest(
    request: Request,
    group_id: int,
    repository: Annotated[str, Query()],
    reference: Annotated[str, Query()],
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    name = ImageName.parse(repository)
    token = await _authorize(request, authorization, name)
    fetcher: Fetcher = request.app.state.fetcher
    result = await fetcher.manifest(
        group_id=group_id,
        name=name,
        reference=Reference.parse(reference),
        head=request.method == "HEAD",
        token=token,
    )
    headers = {"Docker-Content-Digest": result.digest, "Content-Length": str(result.size)}
    if result.stale:
        headers[STALE_HEADER] = "1"
    return Response(result.body or b"", media_type=result.media_type, headers=headers)


@router.api_route("/groups/{group_id}/blobs/{digest}", methods=["GET", "HEAD"])
async def blob(
    request: Request,
    group_id: int,
    digest: str,
    repository: Annotated[str, Query()],
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    name = ImageName.parse(repository)
    token = await _authorize(request, authorization, name)
    fetcher: Fetcher = request.app.state.fetcher
    result = await fetcher.blob(
        group_id=group_id,
        name=name,
        digest=Digest.parse(digest),
        head=request.method == "HEAD",
        token=token,
    )
    headers = {"Docker-Content-Digest": result.digest}
    if result.size is not None:
        headers["Content-Length"] = str(result.size)
    if result.chunks is None:
        return Response(headers=headers, media_type="application/octet-stream")
    return StreamingResponse(result.chunks, headers=headers, media_type="application/octet-stream")
