"""API errors rendered as GitLab does: `{"message": ...}` with the status code."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status: int, message: Any) -> None:
        super().__init__(str(message))
        self.status = status
        self.message = message


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = {
            ".".join(str(part) for part in error["loc"][1:]) or "body": [error["msg"]]
            for error in exc.errors()
        }
        return JSONResponse({"message": problems}, status_code=400)
