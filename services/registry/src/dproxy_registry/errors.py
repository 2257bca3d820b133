"""Every `/v2` response carries the API version header; every error the OCI envelope."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dproxy_shared.oci.errors import ErrorCode, RegistryError, envelope

log = logging.getLogger(__name__)

API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")


def install(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    async def _registry_error(_request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status, headers=exc.headers)

    app.add_middleware(ApiVersionHeader)


class ApiVersionHeader:
    """Pure ASGI (no `BaseHTTPMiddleware`), so streamed blobs pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v2"):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), API_VERSION]
            await send(message)

        await self.app(scope, receive, send_with_header)


def validation_response() -> JSONResponse:
    """Malformed `/v2` requests, in the registry's error format."""
    return JSONResponse(envelope(ErrorCode.NAME_INVALID, "invalid request"), status_code=400)
