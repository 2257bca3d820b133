"""`/-/liveness`, `/-/readiness` and `/metrics`, the same on every service."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from dproxy_shared.runtime import Runtime

router = APIRouter(include_in_schema=False)


@router.get("/-/liveness")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/-/readiness")
async def readiness(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    checks: dict[str, str] = {}
    try:
        async with runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"failed: {type(exc).__name__}"
    if runtime.redis is not None:
        try:
            await runtime.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"failed: {type(exc).__name__}"
    try:
        await runtime.store.check()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"failed: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "failed", "checks": checks},
        status_code=200 if healthy else 503,
    )


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
