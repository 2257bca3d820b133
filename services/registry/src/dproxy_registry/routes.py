"""`/v2`: manifests and blobs, GET and HEAD, by tag and by digest (read-only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from dproxy_registry.auth import authenticate, name_unknown, recheck_actor
from dproxy_registry.ranges import UnsatisfiableRange, parse_range
from dproxy_shared import cache_lookup
from dproxy_shared.fetching import Fetcher, ManifestResult
from dproxy_shared.metrics import BYTES_SERVED, CACHE_REQUESTS
from dproxy_shared.models import Group
from dproxy_shared.oci import media_types
from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.errors import ErrorCode, RegistryError
from dproxy_shared.oci.reference import ImageName, RegistryPath, parse_registry_path
from dproxy_shared.repositories import groups
from dproxy_shared.runtime import Runtime

router = APIRouter(prefix="/v2", include_in_schema=False)

STALE_WARNING = '110 - "Response is Stale"'


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/")
async def ping(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, str]:
    runtime = _runtime(request)
    await authenticate(request.app.state.verifier, runtime.settings, authorization, None)
    return {}


@router.api_route("/{path:path}", methods=["GET", "HEAD"])
async def pull(
    request: Request,
    path: str,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    # No valid name, tag or digest contains `%`: any escape (`%2F`, `%2e`, `%0a`…) is a trick.
    if b"%" in request.scope.get("raw_path", b""):
        raise RegistryError(ErrorCode.NAME_INVALID, "encoded characters are not allowed in names")
    target = parse_registry_path(path)
    runtime = _runtime(request)
    claims, token = await authenticate(
        request.app.state.verifier, runtime.settings, authorization, target.name.repository
    )
    if not claims.allows(target.name.repository, "pull"):
        raise name_unknown(target.name.repository)
    group, own_credentials = await _group(runtime, target.name)
    await recheck_actor(runtime, claims.subject, group, target.name.repository)
    assert group.id is not None
    pull = _Pull(
        runtime=runtime,
        fetcher=request.app.state.fetcher,
        target=target,
        group_id=group.id,
        token=token,
        request=request,
        adopt=not own_credentials,
    )
    if target.kind == "manifests":
        return await _manifest(pull)
    return await _blob(pull)


@router.api_route("/{path:path}", methods=["POST", "PUT", "PATCH", "DELETE"])
async def read_only() -> Response:
    raise RegistryError(ErrorCode.UNSUPPORTED, "the dependency proxy is read-only")


async def _group(runtime: Runtime, name: ImageName) -> tuple[Group, bool]:
    """The group, and whether it pulls with upstream credentials of its own."""
    async with runtime.session() as session:
        settings = await groups.application_settings(session)
        if not settings.dependency_proxy_enabled:
            raise RegistryError(
                ErrorCode.UNAVAILABLE, "the dependency proxy is disabled on this instance"
            )
        group = await groups.get_by_full_path(session, name.group_path)
        if group is None or group.id is None:
            raise name_unknown(name.repository)
        setting = await groups.proxy_setting(session, group.id)
        if not setting.enabled:
            raise name_unknown(name.repository)
        return group, bool(setting.identity)


@dataclass(frozen=True, slots=True)
class _Pull:
    """One authorised request for a manifest or a blob of a group's image."""

    runtime: Runtime
    fetcher: Fetcher
    target: RegistryPath
    group_id: int
    token: str
    request: Request
    # False for a group with its own upstream credentials: objects other groups cached are
    # served to it only after upstream confirms its access (the fetcher checks).
    adopt: bool = True

    @property
    def head(self) -> bool:
        return self.request.method == "HEAD"


async def _manifest(pull: _Pull) -> Response:
    target = pull.target
    cached = await cache_lookup.find_manifest(
        pull.runtime,
        group_id=pull.group_id,
        repository=target.name.upstream_repository,
        reference=target.reference,
        adopt=pull.adopt,
    )
    if cached is not None and cached.fresh:
        CACHE_REQUESTS.labels("manifest", "hit").inc()
        result = cached.result(head=pull.head)
    else:
        CACHE_REQUESTS.labels("manifest", "miss" if cached is None else "revalidate").inc()
        result = await pull.fetcher.manifest(
            group_id=pull.group_id,
            name=target.name,
            reference=target.reference,
            head=pull.head,
            token=pull.token,
        )
    # Clients such as skopeo send one Accept header per media type.
    accept = ", ".join(pull.request.headers.getlist("accept"))
    if not media_types.accepted_by(result.media_type, accept):
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"the manifest is a {result.media_type}, which the request's Accept header "
            "does not list",
        )
    return _manifest_response(result)


def _manifest_response(result: ManifestResult) -> Response:
    headers = {
        "Content-Length": str(result.size),
        "Docker-Content-Digest": result.digest,
        "ETag": f'"{result.digest}"',
    }
    if result.stale:
        headers["Warning"] = STALE_WARNING
    return Response(result.body or b"", media_type=result.media_type, headers=headers)


async def _blob(pull: _Pull) -> Response:
    digest = pull.target.reference.digest
    assert digest is not None
    headers = {"Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes"}
    size = await cache_lookup.find_blob(
        pull.runtime, group_id=pull.group_id, digest=digest, adopt=pull.adopt
    )
    if size is not None:
        CACHE_REQUESTS.labels("blob", "hit").inc()
        if not pull.head and (location := await _redirect(pull.runtime, digest)):
            return Response(status_code=307, headers={**headers, "Location": location})
        return _cached_blob(
            pull.runtime, digest, size, pull.head, headers, pull.request.headers.get("range")
        )
    CACHE_REQUESTS.labels("blob", "miss").inc()
    result = await pull.fetcher.blob(
        group_id=pull.group_id,
        name=pull.target.name,
        digest=digest,
        head=pull.head,
        token=pull.token,
    )
    if result.size is not None:
        headers["Content-Length"] = str(result.size)
    if result.chunks is None:
        return Response(media_type=media_types.OCTET_STREAM, headers=headers)
    return StreamingResponse(
        _counted(result.chunks, "upstream"), media_type=media_types.OCTET_STREAM, headers=headers
    )


async def _redirect(runtime: Runtime, digest: Digest) -> str | None:
    """With `DPROXY_STORAGE_REDIRECT`, cached blobs are fetched from object storage directly:
    the bytes then never pass through the registry."""
    settings = runtime.settings
    if not settings.storage_redirect:
        return None
    return await runtime.store.redirect_url(
        digest, timedelta(seconds=settings.storage_redirect_expires)
    )


def _cached_blob(
    runtime: Runtime,
    digest: Digest,
    size: int,
    head: bool,
    headers: dict[str, str],
    range_header: str | None,
) -> Response:
    try:
        byte_range = parse_range(range_header, size)
    except UnsatisfiableRange:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    status, offset, length = 200, 0, size
    if byte_range is not None:
        first, last = byte_range
        status, offset, length = 206, first, last - first + 1
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    if head:
        return Response(status_code=status, media_type=media_types.OCTET_STREAM, headers=headers)
    chunks = runtime.store.read(digest, offset, length)
    return StreamingResponse(
        _counted(chunks, "cache"),
        status_code=status,
        media_type=media_types.OCTET_STREAM,
        headers=headers,
    )


async def _counted(chunks: AsyncIterator[bytes], source: str) -> AsyncIterator[bytes]:
    counter = BYTES_SERVED.labels(source)
    async for chunk in chunks:
        counter.inc(len(chunk))
        yield chunk
