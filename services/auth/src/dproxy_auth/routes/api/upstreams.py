"""The upstream registries and their rate-limit budgets (admin), as the fetchers last saw them.

The numbers come from the shared cache the fetchers write (`dproxy_shared.ratelimit`): in
split mode that is Redis, so every replica's observations show here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from dproxy_auth.deps import AdminDep, RuntimeDep
from dproxy_auth.routes.api._routing import resource_router
from dproxy_shared import ratelimit

router = resource_router("upstreams")


class UpstreamOut(BaseModel):
    url: str
    host: str
    ratelimit_limit: int | None = Field(description="Pulls allowed per window")
    ratelimit_remaining: int | None = Field(description="Pulls left in the window")
    ratelimit_window: int | None = Field(description="The window, in seconds")
    ratelimit_source: str | None = Field(description="docker-ratelimit-source")
    retry_after: float | None = Field(description="Seconds upstream asked to wait (last 429)")
    observed_at: datetime | None = Field(description="When upstream last sent these numbers")
    budget_low: bool = Field(description="Cached tags are served without revalidation")
    budget_low_for: float | None = Field(description="Seconds the low-budget mode still lasts")


@router.get("/dependency_proxy/upstreams", summary="Upstream registries and their budgets")
async def list_upstreams(_admin: AdminDep, runtime: RuntimeDep) -> list[UpstreamOut]:
    url = runtime.settings.upstream_url
    host = urlsplit(url).netloc
    state, low_for = await ratelimit.snapshot(runtime.coordination.cache, host)
    return [
        UpstreamOut(
            url=url,
            host=host,
            ratelimit_limit=state.limit if state else None,
            ratelimit_remaining=state.remaining if state else None,
            ratelimit_window=state.window_seconds if state else None,
            ratelimit_source=state.source if state else None,
            retry_after=state.retry_after_seconds if state else None,
            observed_at=datetime.fromtimestamp(state.observed_at, UTC) if state else None,
            budget_low=low_for is not None,
            budget_low_for=round(low_for, 1) if low_for is not None else None,
        )
    ]
