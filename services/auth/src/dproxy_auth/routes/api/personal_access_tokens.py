"""Personal access tokens (GitLab's PAT API). A token's value is shown once, by the response
that creates or rotates it; only its digest is stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Depends, Query
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import service
from dproxy_auth.deps import AdminDep, Caller, CallerDep, SessionDep
from dproxy_auth.errors import ApiError
from dproxy_auth.routes.api._routing import resource_router
from dproxy_auth.routes.api.lookups import FORBIDDEN, IdPath, PathUser, not_found
from dproxy_auth.routes.api.pagination import PaginationDep
from dproxy_auth.routes.api.schemas import (
    MAX_ID,
    NewPersonalAccessToken,
    PersonalAccessTokenCreate,
    PersonalAccessTokenOut,
    TokenRotate,
)
from dproxy_shared.models import PersonalAccessToken, User
from dproxy_shared.repositories import tokens

router = resource_router("personal access tokens")


async def _create(
    session: AsyncSession, user: User, body: PersonalAccessTokenCreate
) -> NewPersonalAccessToken:
    token, secret = await service.create_personal_access_token(
        session, user=user, name=body.name, scopes=body.scopes, expires_at=body.expires_at
    )
    return NewPersonalAccessToken.create(token, secret)


@router.post(
    "/users/{user_id}/personal_access_tokens",
    status_code=201,
    summary="Create a token for a user (admin)",
)
async def create_for_user(
    _admin: AdminDep, user: PathUser, body: PersonalAccessTokenCreate, session: SessionDep
) -> NewPersonalAccessToken:
    return await _create(session, user, body)


@router.post("/user/personal_access_tokens", status_code=201, summary="Create a token for yourself")
async def create_own(
    caller: CallerDep, body: PersonalAccessTokenCreate, session: SessionDep
) -> NewPersonalAccessToken:
    return await _create(session, caller.user, body)


@router.get("/personal_access_tokens", summary="Your tokens (admins: everyone's)")
async def list_tokens(
    caller: CallerDep,
    session: SessionDep,
    pages: PaginationDep,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    revoked: bool | None = None,
) -> list[PersonalAccessTokenOut]:
    if not caller.admin:
        if user_id not in (None, caller.user.id):
            raise ApiError(403, FORBIDDEN)
        user_id = caller.user.id
    found, total = await tokens.personal_access_tokens_page(
        session, window=pages.window, user_id=user_id, revoked=revoked
    )
    pages.publish(total)
    return [PersonalAccessTokenOut.of(token) for token in found]


async def _own_token(caller: CallerDep, session: SessionDep) -> PersonalAccessToken:
    """The token this request authenticated with."""
    token = await tokens.get_personal_access_token(session, caller.actor.id)
    if token is None:
        raise not_found("Personal Access Token")
    return token


async def _token(token_id: IdPath, caller: CallerDep, session: SessionDep) -> PersonalAccessToken:
    """A token of the caller's, or anyone's for an admin; others' do not exist (404)."""
    token = await tokens.get_personal_access_token(session, token_id)
    if token is None or not _may_manage(caller, token):
        raise not_found("Personal Access Token")
    return token


def _may_manage(caller: Caller, token: PersonalAccessToken) -> bool:
    return caller.admin or token.user_id == caller.user.id


OwnToken = Annotated[PersonalAccessToken, Depends(_own_token)]
PathToken = Annotated[PersonalAccessToken, Depends(_token)]
RotateBody = Annotated[TokenRotate | None, Body()]


@router.get("/personal_access_tokens/self", summary="The token of this request")
async def get_own(token: OwnToken) -> PersonalAccessTokenOut:
    return PersonalAccessTokenOut.of(token)


@router.delete("/personal_access_tokens/self", status_code=204, summary="Revoke this token")
async def revoke_own(token: OwnToken, session: SessionDep) -> None:
    await service.revoke_personal_access_token(session, token=token)


@router.post("/personal_access_tokens/self/rotate", summary="Rotate this token")
async def rotate_own(
    token: OwnToken, session: SessionDep, body: RotateBody = None
) -> NewPersonalAccessToken:
    return await _rotate(session, token, body)


@router.get("/personal_access_tokens/{token_id}", summary="One token")
async def get_token(token: PathToken) -> PersonalAccessTokenOut:
    return PersonalAccessTokenOut.of(token)


@router.delete("/personal_access_tokens/{token_id}", status_code=204, summary="Revoke a token")
async def revoke_token(token: PathToken, session: SessionDep) -> None:
    await service.revoke_personal_access_token(session, token=token)


@router.post(
    "/personal_access_tokens/{token_id}/rotate",
    summary="Revoke a token and issue a new one with the same name and scopes",
)
async def rotate_token(
    token: PathToken, session: SessionDep, body: RotateBody = None
) -> NewPersonalAccessToken:
    return await _rotate(session, token, body)


async def _rotate(
    session: AsyncSession, token: PersonalAccessToken, body: TokenRotate | None
) -> NewPersonalAccessToken:
    successor, secret = await service.rotate_personal_access_token(
        session, token=token, expires_at=body.expires_at if body else None
    )
    return NewPersonalAccessToken.create(successor, secret)
