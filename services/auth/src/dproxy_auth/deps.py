"""FastAPI dependencies of the auth service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import actors
from dproxy_auth.actors import Actor
from dproxy_auth.errors import ApiError
from dproxy_auth.passwords import PasswordVerifier
from dproxy_shared.jwt_tokens import SigningKey
from dproxy_shared.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_password_verifier(request: Request) -> PasswordVerifier:
    verifier: PasswordVerifier = request.app.state.password_verifier
    return verifier


def get_signing_key(request: Request) -> SigningKey:
    key: SigningKey = request.app.state.signing_key
    return key


async def get_session(
    runtime: Annotated[Runtime, Depends(get_runtime)],
) -> AsyncIterator[AsyncSession]:
    async with runtime.session() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SigningKeyDep = Annotated[SigningKey, Depends(get_signing_key)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
PasswordsDep = Annotated[PasswordVerifier, Depends(get_password_verifier)]


async def get_current_actor(
    session: SessionDep,
    private_token: Annotated[str | None, Header(alias="PRIVATE-TOKEN")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Actor:
    """`PRIVATE-TOKEN: <pat>` or `Authorization: Bearer <pat>`, as GitLab's API takes them."""
    secret = private_token
    if secret is None and authorization and authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()
    if not secret:
        raise ApiError(401, "401 Unauthorized")
    actor = await actors.from_personal_access_token(session, secret)
    if actor is None or actor.via_token is None or "api" not in actor.via_token.scope_list:
        raise ApiError(401, "401 Unauthorized")
    return actor


CurrentActor = Annotated[Actor, Depends(get_current_actor)]


async def get_admin(actor: CurrentActor) -> Actor:
    if not actor.user.admin:
        raise ApiError(403, "403 Forbidden")
    return actor


AdminActor = Annotated[Actor, Depends(get_admin)]
