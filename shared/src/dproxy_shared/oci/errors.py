"""Registry error codes and the OCI error envelope `{"errors":[{code,message,detail}]}`."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class ErrorCode(enum.Enum):
    """OCI distribution error codes (plus the gateway ones a proxy needs)."""

    BLOB_UNKNOWN = "BLOB_UNKNOWN"
    DIGEST_INVALID = "DIGEST_INVALID"
    MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
    MANIFEST_INVALID = "MANIFEST_INVALID"
    NAME_INVALID = "NAME_INVALID"
    NAME_UNKNOWN = "NAME_UNKNOWN"
    TAG_INVALID = "TAG_INVALID"
    SIZE_INVALID = "SIZE_INVALID"
    UNAUTHORIZED = "UNAUTHORIZED"
    DENIED = "DENIED"
    UNSUPPORTED = "UNSUPPORTED"
    TOOMANYREQUESTS = "TOOMANYREQUESTS"
    UNAVAILABLE = "UNAVAILABLE"
    BAD_GATEWAY = "BAD_GATEWAY"
    GATEWAY_TIMEOUT = "GATEWAY_TIMEOUT"

    @property
    def status(self) -> int:
        return _STATUS[self]


_STATUS = {
    ErrorCode.BLOB_UNKNOWN: 404,
    ErrorCode.DIGEST_INVALID: 400,
    ErrorCode.MANIFEST_UNKNOWN: 404,
    ErrorCode.MANIFEST_INVALID: 400,
    ErrorCode.NAME_INVALID: 400,
    ErrorCode.NAME_UNKNOWN: 404,
    ErrorCode.TAG_INVALID: 400,
    ErrorCode.SIZE_INVALID: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.DENIED: 403,
    ErrorCode.UNSUPPORTED: 405,
    ErrorCode.TOOMANYREQUESTS: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.BAD_GATEWAY: 502,
    ErrorCode.GATEWAY_TIMEOUT: 504,
}


def code_for_status(status: int, *, unknown: ErrorCode) -> ErrorCode:
    """The code an error status stands for when no body names it (an answer to HEAD):
    `unknown` for 404, the gateway codes by their status, BAD_GATEWAY otherwise."""
    if status == 404:
        return unknown
    gateway = (
        ErrorCode.TOOMANYREQUESTS,
        ErrorCode.UNAVAILABLE,
        ErrorCode.BAD_GATEWAY,
        ErrorCode.GATEWAY_TIMEOUT,
    )
    return next((code for code in gateway if code.status == status), ErrorCode.BAD_GATEWAY)


class RegistryError(Exception):
    """Raised anywhere below a `/v2` route; rendered once, by the registry's error handler."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status or code.status
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return envelope(self.code, self.message, self.detail)


def envelope(code: ErrorCode, message: str, detail: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code.value, "message": message}
    if detail is not None:
        error["detail"] = detail
    return {"errors": [error]}
