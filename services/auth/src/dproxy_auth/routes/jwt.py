"""`/jwt/auth`: the Docker v2 token endpoint (GET with Basic auth, or containerd's POST)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Query
from fastapi.responses import JSONResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import actors
from dproxy_auth.deps import GuardDep, PasswordsDep, RuntimeDep, SessionDep, SigningKeyDep
from dproxy_shared import access
from dproxy_shared.access import Actor
from dproxy_shared.jwt_tokens import SigningKey
from dproxy_shared.oci.errors import ErrorCode, RegistryError, envelope
from dproxy_shared.oci.reference import ImageName, Scope
from dproxy_shared.repositories import groups
from dproxy_shared.runtime import Runtime

SERVICE = "dependency_proxy"

router = APIRouter(prefix="/jwt", tags=["registry auth"])

DENIED_MESSAGE = (
    "HTTP Basic: Access denied. If a password was provided for Git authentication, the "
    "password was incorrect or you're required to use a token instead of a password. If a "
    "token was provided, it was either incorrect, expired, or improperly scoped."
)


@router.get("/auth", summary="Issue a registry token (Basic credentials)")
async def token_get(
    runtime: RuntimeDep,
    session: SessionDep,
    signing_key: SigningKeyDep,
    passwords: PasswordsDep,
    guard: GuardDep,
    service: Annotated[str, Query()] = SERVICE,
    scope: Annotated[list[str] | None, Query()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    if service != SERVICE:
        return _unknown_service(service)
    actor: Actor | None = None
    if authorization:
        credentials = _basic_credentials(authorization)
        if credentials is not None:
            actor = await actors.from_basic_credentials(session, *credentials, passwords=passwords)
        if actor is None or not actor.may_use_registry():
            await guard.record_failure()
            return _denied()
    return await _issue(runtime, session, signing_key, actor, scope or [])


@router.post("/auth", summary="Issue a registry token (OAuth2 password grant, containerd)")
async def token_post(
    runtime: RuntimeDep,
    session: SessionDep,
    signing_key: SigningKeyDep,
    passwords: PasswordsDep,
    guard: GuardDep,
    grant_type: Annotated[str, Form()],
    service: Annotated[str, Form()] = SERVICE,
    scope: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> JSONResponse:
    if service != SERVICE:
        return _unknown_service(service)
    if grant_type != "password":
        # containerd falls back to GET with Basic auth on a 400.
        return JSONResponse(
            {"error": "unsupported_grant_type", "error_description": "use grant_type=password"},
            status_code=400,
        )
    actor = await actors.from_basic_credentials(session, username, password, passwords=passwords)
    if actor is None or not actor.may_use_registry():
        await guard.record_failure()
        return _denied()
    return await _issue(runtime, session, signing_key, actor, scope.split())


async def _issue(
    runtime: Runtime,
    session: AsyncSession,
    signing_key: SigningKey,
    actor: Actor | None,
    scopes: list[str],
) -> JSONResponse:
    granted = [s for s in [await _grant(session, actor, raw) for raw in scopes] if s]
    settings = await groups.application_settings(session)
    lifetime = settings.container_registry_token_expire_delay * 60
    subject = actor.subject if actor else "anonymous"
    token, issued_at = signing_key.issue(
        issuer=runtime.settings.jwt_issuer,
        subject=subject,
        access=granted,
        lifetime_seconds=lifetime,
    )
    body: dict[str, Any] = {
        "token": token,
        "access_token": token,
        "expires_in": lifetime,
        "issued_at": datetime.fromtimestamp(issued_at, UTC).isoformat().replace("+00:00", "Z"),
    }
    return JSONResponse(body)


async def _grant(session: AsyncSession, actor: Actor | None, raw: str) -> Scope | None:
    """The pull scope, if the actor may pull from the group; anything else is dropped."""
    scope = Scope.parse(raw)
    if scope is None or "pull" not in scope.actions:
        return None
    try:
        name = ImageName.parse(scope.repository)
    except RegistryError:
        return None
    group = await groups.get_by_full_path(session, name.group_path)
    if group is None or group.id is None:
        return None
    settings = await groups.application_settings(session)
    if not settings.dependency_proxy_enabled or not await groups.proxy_enabled(session, group.id):
        return None
    if not await access.can_pull(session, actor, group):
        return None
    return Scope(name.repository, ("pull",))


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _denied() -> JSONResponse:
    return JSONResponse(
        envelope(ErrorCode.UNAUTHORIZED, DENIED_MESSAGE),
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="dproxy"'},
    )


def _unknown_service(service: str) -> JSONResponse:
    return JSONResponse(
        envelope(ErrorCode.NAME_UNKNOWN, f"unknown service {service[:80]!r}"), status_code=404
    )


@router.get("/jwks.json", summary="Public keys that verify registry tokens")
async def jwks(signing_key: SigningKeyDep) -> dict[str, Any]:
    return signing_key.jwks()
