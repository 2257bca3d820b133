"""API errors rendered as GitLab does: `{"message": ...}` with the status code."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ApiError(Exception):
    def __init__(self, status: int, message: Any, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(message))
        self.status = status
        self.message = message
        self.headers = headers or {}


def validation_problems(exc: RequestValidationError) -> dict[str, list[str]]:
    """GitLab's shape: each offending field (dotted path) with its problems; never the input."""
    problems: dict[str, list[str]] = {}
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"][1:]) or str(error["loc"][0])
        problems.setdefault(field, []).append(str(error["msg"]))
    return problems


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        # Unknown paths and methods: GitLab's `{"message": "404 Not Found"}`.
        phrase = HTTPStatus(exc.status_code).phrase
        return JSONResponse(
            {"message": f"{exc.status_code} {phrase}"},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )


def validation_response(exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"message": validation_problems(exc)}, status_code=400)
