"""The pages' stylesheet and script, served from memory with an immutable cache lifetime
(their URLs carry the content hash, see `rendering.asset_url`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dproxy_auth.web.rendering import ASSET_PREFIX, ASSETS

router = APIRouter(include_in_schema=False)


@router.get(ASSET_PREFIX + "{name}")
async def asset(name: str, request: Request) -> Response:
    found = ASSETS.get(name)
    if found is None:
        return Response("Not found\n", status_code=404, media_type="text/plain")
    headers = {
        "ETag": f'"{found.etag}"',
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)
