"""FastAPI dependencies of the auth service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import actors
from dproxy_auth.brute_force import BruteForceGuard
from dproxy_auth.errors import ApiError
from dproxy_auth.passwords import PasswordVerifier
from dproxy_auth.tokens import RUNNER_TOKEN_PREFIX
from dproxy_shared.access import Actor
from dproxy_shared.jwt_tokens import SigningKey
from dproxy_shared.models import CiRunner, User
from dproxy_shared.repositories import tokens
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


async def get_guard(
    request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> BruteForceGuard:
    """The caller's brute-force state; a banned address is refused before anything else."""
    guard = BruteForceGuard(runtime, request.client.host if request.client else "unknown")
    await guard.refuse_if_banned()
    return guard


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SigningKeyDep = Annotated[SigningKey, Depends(get_signing_key)]
# scope="function": the unit of work commits when the endpoint returns, before the response
# is sent, so a client that acts on a 2xx always sees its change (and a failed commit is a
# 500, not a 2xx that silently lost the write).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
PasswordsDep = Annotated[PasswordVerifier, Depends(get_password_verifier)]
GuardDep = Annotated[BruteForceGuard, Depends(get_guard)]


@dataclass(frozen=True, slots=True)
class Caller:
    """An API caller: a user, through one of their personal (or group) access tokens."""

    user: User
    actor: Actor

    @property
    def admin(self) -> bool:
        return self.user.admin


_private_token = APIKeyHeader(name="PRIVATE-TOKEN", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def _presented_secret(
    private_token: Annotated[str | None, Security(_private_token)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str | None:
    """`PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`, as GitLab's API takes them."""
    return private_token or (bearer.credentials if bearer else None)


SecretDep = Annotated[str | None, Depends(_presented_secret)]


async def get_caller(session: SessionDep, guard: GuardDep, secret: SecretDep) -> Caller:
    """A user, through a personal (or group) access token with an API scope."""
    actor = await actors.from_personal_access_token(session, secret) if secret else None
    if actor is None or actor.user is None or not actor.scopes & {"api", "read_api"}:
        if secret:
            await guard.record_failure()
        raise ApiError(401, "401 Unauthorized")
    return Caller(actor.user, actor)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_writer(caller: CallerDep, request: Request) -> Caller:
    """`read_api` tokens may only read."""
    if request.method not in ("GET", "HEAD") and "api" not in caller.actor.scopes:
        raise ApiError(403, "403 Forbidden - insufficient_scope")
    return caller


async def get_admin(caller: CallerDep) -> Caller:
    if not caller.admin:
        raise ApiError(403, "403 Forbidden")
    return caller


WriterDep = Annotated[Caller, Depends(get_writer)]
AdminDep = Annotated[Caller, Depends(get_admin)]


@dataclass(frozen=True, slots=True)
class JobIssuer:
    """Who may start CI jobs: an instance runner (by its token), or an admin."""

    runner: CiRunner | None
    admin: User | None


async def get_job_issuer(
    request: Request, session: SessionDep, guard: GuardDep, secret: SecretDep
) -> JobIssuer:
    if secret and secret.startswith(RUNNER_TOKEN_PREFIX):
        runner = await tokens.find_runner(session, secret)
        if runner is None:
            await guard.record_failure()
            raise ApiError(401, "401 Unauthorized")
        await tokens.mark_runner_contacted(session, runner)
        return JobIssuer(runner=runner, admin=None)
    caller = await get_writer(await get_caller(session, guard, secret), request)
    if not caller.admin:
        raise ApiError(403, "403 Forbidden")
    return JobIssuer(runner=None, admin=caller.user)


JobIssuerDep = Annotated[JobIssuer, Depends(get_job_issuer)]
