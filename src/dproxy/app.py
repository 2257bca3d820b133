"""Compose the three services into one ASGI app: all of them (embedded default) or one.

Split mode swaps the in-process pieces for HTTP ones: the registry reaches the fetcher at
`DPROXY_FETCHER_URL`, and registry and fetcher verify tokens with the JWKS of `DPROXY_AUTH_URL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from dproxy_auth import errors as auth_errors
from dproxy_auth import web as auth_web
from dproxy_auth.passwords import PasswordVerifier
from dproxy_auth.routes import api as auth_api
from dproxy_auth.routes import jwt as auth_jwt
from dproxy_auth.service import ensure_root
from dproxy_fetcher import routes as fetcher_routes
from dproxy_fetcher.breaker import CircuitBreaker
from dproxy_fetcher.cleanup import Cleanup
from dproxy_fetcher.service import FetcherService
from dproxy_fetcher.upstream import Credentials, UpstreamClient
from dproxy_registry import errors as registry_errors
from dproxy_registry import routes as registry_routes
from dproxy_registry.fetcher_client import HttpFetcher
from dproxy_shared import health
from dproxy_shared.jwt_tokens import LocalKeySet, RemoteKeySet, SigningKey
from dproxy_shared.ratelimit import RateLimitBudget
from dproxy_shared.runtime import Runtime
from dproxy_shared.settings import ServiceName, Settings

log = logging.getLogger("dproxy")

ALL_SERVICES: frozenset[ServiceName] = frozenset({"auth", "registry", "fetcher"})


def create_app(settings: Settings, services: frozenset[ServiceName] = ALL_SERVICES) -> FastAPI:
    split = services != ALL_SERVICES
    if split and "auth" not in services and not settings.auth_url:
        raise ValueError("DPROXY_AUTH_URL is required to run registry or fetcher alone")
    if "registry" in services and "fetcher" not in services and not settings.fetcher_url:
        raise ValueError("DPROXY_FETCHER_URL is required to run the registry alone")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = Runtime.open(settings)
            stack.push_async_callback(runtime.close)
            app.state.runtime = runtime
            internal = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=settings.fill_timeout))
            stack.push_async_callback(internal.aclose)

            signing_key: SigningKey | None = None
            if "auth" in services:
                signing_key = SigningKey.load_or_create(_key_file(settings))
                app.state.signing_key = signing_key
                app.state.password_verifier = PasswordVerifier()
                # Signed with a key derived from the JWT key, which every auth replica shares.
                app.state.web_sessions = auth_web.SessionCodec(
                    signing_key.derive_secret("web-session"),
                    secure=settings.external_url.startswith("https://"),
                    cache=runtime.coordination.cache,
                )
                bootstrap = asyncio.create_task(_bootstrap(runtime))
                stack.push_async_callback(_cancel, bootstrap)
            app.state.verifier = (
                LocalKeySet(signing_key)
                if signing_key
                else RemoteKeySet(f"{settings.auth_url.rstrip('/')}/jwt/jwks.json", internal)
            )

            if "fetcher" in services:
                upstream_http = httpx.AsyncClient(
                    timeout=httpx.Timeout(
                        settings.upstream_read_timeout, connect=settings.upstream_connect_timeout
                    ),
                    limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                    follow_redirects=False,
                )
                stack.push_async_callback(upstream_http.aclose)
                fetcher = FetcherService(
                    runtime,
                    UpstreamClient(
                        settings.upstream_url,
                        upstream_http,
                        runtime.coordination.cache,
                        _upstream_credentials(settings),
                        breaker=CircuitBreaker(
                            urlsplit(settings.upstream_url).netloc,
                            failures=settings.breaker_failures,
                            cooldown=settings.breaker_cooldown,
                        ),
                        budget=RateLimitBudget(
                            runtime.coordination.cache,
                            urlsplit(settings.upstream_url).netloc,
                            settings.ratelimit_reserve,
                        ),
                    ),
                )
                stack.push_async_callback(fetcher.close)
                app.state.fetcher = fetcher
                cleanup = Cleanup(runtime)
                cleanup.start()
                stack.push_async_callback(cleanup.stop)
            elif "registry" in services:
                app.state.fetcher = HttpFetcher(settings.fetcher_url, internal)
            yield

    app = FastAPI(
        title="dproxy",
        summary="A GitLab-compatible Dependency Proxy for container images",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/api/v4/openapi.json" if "auth" in services else None,
        docs_url="/api/v4/docs" if "auth" in services else None,
        redoc_url=None,
    )
    app.include_router(health.router)
    if "auth" in services:
        app.include_router(auth_jwt.router)
        app.include_router(auth_api.router)
        app.include_router(auth_web.router)
    if "registry" in services:
        app.include_router(registry_routes.router)
    if "fetcher" in services and split:
        app.include_router(fetcher_routes.router)
    auth_errors.install(app)
    registry_errors.install(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Each service answers malformed requests in its own clients' format.
        if request.url.path.startswith("/v2"):
            return registry_errors.validation_response()
        return auth_errors.validation_response(exc)

    return app


async def _bootstrap(runtime: Runtime) -> None:
    """Create `root` on the first start, retrying while the database is unreachable: the
    service starts anyway, and `/-/readiness` says what is missing meanwhile."""
    while True:
        try:
            password = await ensure_root(runtime)
        except (OSError, SQLAlchemyError) as exc:
            log.warning("cannot bootstrap the root user yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(5)
            continue
        if password:
            # Printed once, on the first start; nothing stores it in clear.
            print(f"dproxy: created user root with password: {password}", flush=True)
        return


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _key_file(settings: Settings) -> Path:
    assert settings.jwt_key_file is not None  # filled in by Settings
    return settings.jwt_key_file


def _upstream_credentials(settings: Settings) -> Credentials | None:
    if not settings.upstream_username:
        return None
    return Credentials(settings.upstream_username, settings.upstream_password.get_secret_value())


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
