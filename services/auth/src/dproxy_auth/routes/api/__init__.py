"""The management REST API: GitLab's `/api/v4` paths, field names, status codes and
pagination, one module per resource. Every route needs a personal access token (`api` or
`read_api`; only `api` tokens may change anything), except CI jobs, which runners start with
their own tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from dproxy_auth.deps import get_writer
from dproxy_auth.routes.api import (
    access_tokens,
    application_settings,
    ci_jobs,
    dependency_proxy,
    dependency_proxy_cache,
    deploy_tokens,
    groups,
    members,
    personal_access_tokens,
    runners,
    upstreams,
    users,
)
from dproxy_auth.routes.api._routing import ERROR_RESPONSES

router = APIRouter(prefix="/api/v4", responses=ERROR_RESPONSES)
for resource in (
    users,
    personal_access_tokens,
    groups,
    members,
    deploy_tokens,
    access_tokens,
    application_settings,
    dependency_proxy,
    dependency_proxy_cache,
    upstreams,
    runners,
):
    router.include_router(resource.router, dependencies=[Depends(get_writer)])
router.include_router(ci_jobs.router)  # authenticates runners itself

__all__ = ["router"]
