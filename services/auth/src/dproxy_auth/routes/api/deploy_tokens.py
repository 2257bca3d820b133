"""Group deploy tokens (Owner): pull from the group and its subgroups with the token's own
username. The value is shown once, when the token is created."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from dproxy_auth import service
from dproxy_auth.deps import SessionDep
from dproxy_auth.routes.api._routing import CONFLICT, resource_router
from dproxy_auth.routes.api.lookups import IdPath, OwnedGroup, not_found
from dproxy_auth.routes.api.pagination import PaginationDep
from dproxy_auth.routes.api.schemas import DeployTokenCreate, DeployTokenOut, NewDeployToken
from dproxy_shared.models import DeployToken
from dproxy_shared.repositories import tokens

router = resource_router("deploy tokens")


@router.get("/groups/{group_id}/deploy_tokens", summary="A group's deploy tokens")
async def list_deploy_tokens(
    group: OwnedGroup, session: SessionDep, pages: PaginationDep, active: bool | None = None
) -> list[DeployTokenOut]:
    assert group.id is not None
    found, total = await tokens.deploy_tokens_page(
        session, group_id=group.id, window=pages.window, active=active
    )
    pages.publish(total)
    return [DeployTokenOut.of(token) for token in found]


@router.post(
    "/groups/{group_id}/deploy_tokens",
    status_code=201,
    responses=CONFLICT,
    summary="Create a deploy token",
)
async def create_deploy_token(
    group: OwnedGroup, body: DeployTokenCreate, session: SessionDep
) -> NewDeployToken:
    token, secret = await service.create_deploy_token(
        session,
        group=group,
        name=body.name,
        username=body.username,
        scopes=body.scopes,
        expires_at=body.expires_at,
    )
    return NewDeployToken.create(token, secret)


async def _deploy_token(group: OwnedGroup, token_id: IdPath, session: SessionDep) -> DeployToken:
    token = await tokens.get_deploy_token(session, token_id)
    if token is None or token.group_id != group.id:
        raise not_found("Deploy Token")
    return token


PathDeployToken = Annotated[DeployToken, Depends(_deploy_token)]


@router.get("/groups/{group_id}/deploy_tokens/{token_id}", summary="One deploy token")
async def get_deploy_token(token: PathDeployToken) -> DeployTokenOut:
    return DeployTokenOut.of(token)


@router.delete(
    "/groups/{group_id}/deploy_tokens/{token_id}",
    status_code=204,
    summary="Revoke a deploy token",
)
async def revoke_deploy_token(token: PathDeployToken, session: SessionDep) -> None:
    await tokens.revoke_deploy_token(session, token)
