"""Routing for `/api/v4`: `%2F` inside a path segment, service errors, documented responses.

GitLab takes a group's full path URL-encoded as `:id` (`/groups/top%2Fsub/members`), and
python-gitlab sends it so. The ASGI server decodes `%2F` before routing, which would make
`top/sub` two segments; these routes match against the raw path instead, decoding each
segment on its own and re-encoding `/` and `%`, so a path parameter arrives as `top%2Fsub`
(see `lookups.find_group`) and `members` can never be mistaken for part of a group path.

Numeric ids are plain parameters, validated by FastAPI (a 400 with GitLab's message rather
than a bare 404 from the router), so a route with a literal segment (`/self`, `/all`) must be
declared before its `/{id}` sibling.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Match
from starlette.types import Scope

from dproxy_auth import service
from dproxy_auth.errors import ApiError, validation_problems


class ErrorMessage(BaseModel):
    """GitLab's error body: a sentence, or field names mapped to their problems."""

    message: str | dict[str, Any]


def errors_described(*described: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorMessage, "description": text} for status, text in described}


# Every route can answer these. 422 is listed so that FastAPI does not document its own
# validation error shape: invalid input is a 400 with GitLab's `{"message": {...}}`.
ERROR_RESPONSES = errors_described(
    (400, "Invalid input"),
    (401, "Missing, invalid, expired or revoked token"),
    (403, "Not allowed for this caller or token scope"),
    (404, "Not found, or not visible to the caller"),
    (422, "Unprocessable"),
    (429, "Too many failed authentication attempts from this address"),
)
# Routes that create something with a unique name.
CONFLICT = errors_described((409, "Already exists"))


def _segment_keeping_separators(raw: str) -> str:
    return unquote(raw).replace("%", "%25").replace("/", "%2F")


def _route_path(scope: Scope) -> str | None:
    raw: bytes | None = scope.get("raw_path")
    if not raw:
        return None
    return "/".join(
        _segment_keeping_separators(s) for s in raw.decode("utf-8", "replace").split("/")
    )


class ApiRoute(APIRoute):
    """Matches the raw path, and turns the service's exceptions into GitLab's answers."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = _route_path(scope) if scope["type"] == "http" else None
        return super().matches({**scope, "path": path} if path is not None else scope)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def translated(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise ApiError(400, validation_problems(exc)) from exc
            except service.ValidationFailed as exc:
                raise ApiError(400, str(exc)) from exc
            except service.Conflict as exc:
                raise ApiError(409, str(exc)) from exc
            except service.Forbidden as exc:
                raise ApiError(403, f"403 Forbidden - {exc}") from exc

        return translated


def resource_router(tag: str) -> APIRouter:
    """The router of one resource; `routes.api` mounts them all under `/api/v4`."""
    return APIRouter(tags=[tag], route_class=ApiRoute)
