"""Group access tokens (Owner): each is a bot user, a member of the group at the token's
access level, that owns one personal access token tied to the group."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Depends

from dproxy_auth import service
from dproxy_auth.deps import SessionDep
from dproxy_auth.routes.api._routing import resource_router
from dproxy_auth.routes.api.lookups import IdPath, OwnedGroup, not_found
from dproxy_auth.routes.api.pagination import PaginationDep
from dproxy_auth.routes.api.schemas import (
    GroupAccessTokenCreate,
    GroupAccessTokenOut,
    NewGroupAccessToken,
    TokenRotate,
)
from dproxy_shared.models import PersonalAccessToken
from dproxy_shared.repositories import tokens

router = resource_router("group access tokens")


@router.get("/groups/{group_id}/access_tokens", summary="A group's access tokens")
async def list_access_tokens(
    group: OwnedGroup, session: SessionDep, pages: PaginationDep
) -> list[GroupAccessTokenOut]:
    assert group.id is not None
    found, total = await tokens.group_access_tokens_page(
        session, group_id=group.id, window=pages.window
    )
    pages.publish(total)
    return [GroupAccessTokenOut.with_level(token, level) for token, level in found]


@router.post("/groups/{group_id}/access_tokens", status_code=201, summary="Create one")
async def create_access_token(
    group: OwnedGroup, body: GroupAccessTokenCreate, session: SessionDep
) -> NewGroupAccessToken:
    token, secret = await service.create_group_access_token(
        session,
        group=group,
        name=body.name,
        scopes=body.scopes,
        access_level=body.access_level,
        expires_at=body.expires_at,
    )
    return NewGroupAccessToken.create(token, body.access_level, secret)


async def _access_token(
    group: OwnedGroup, token_id: IdPath, session: SessionDep
) -> tuple[PersonalAccessToken, int | None]:
    assert group.id is not None
    found = await tokens.get_group_access_token(session, group_id=group.id, token_id=token_id)
    if found is None:
        raise not_found("Group Access Token")
    return found


PathAccessToken = Annotated[tuple[PersonalAccessToken, int | None], Depends(_access_token)]


@router.get("/groups/{group_id}/access_tokens/{token_id}", summary="One group access token")
async def get_access_token(found: PathAccessToken) -> GroupAccessTokenOut:
    return GroupAccessTokenOut.with_level(*found)


@router.delete(
    "/groups/{group_id}/access_tokens/{token_id}",
    status_code=204,
    summary="Revoke a group access token (its bot user is blocked)",
)
async def revoke_access_token(found: PathAccessToken, session: SessionDep) -> None:
    await service.revoke_personal_access_token(session, token=found[0])


@router.post(
    "/groups/{group_id}/access_tokens/{token_id}/rotate",
    summary="Revoke a group access token and issue a new one for the same bot",
)
async def rotate_access_token(
    found: PathAccessToken,
    session: SessionDep,
    body: Annotated[TokenRotate | None, Body()] = None,
) -> NewGroupAccessToken:
    token, level = found
    successor, secret = await service.rotate_personal_access_token(
        session, token=token, expires_at=body.expires_at if body else None
    )
    return NewGroupAccessToken.create(successor, level or 0, secret)
