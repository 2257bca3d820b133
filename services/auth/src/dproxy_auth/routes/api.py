"""The management REST API: GitLab's `/api/v4` paths, field names and status codes.

This is the subset the core needs (users, tokens, groups, members); the identity issue
completes it. Token values appear once, in the response that creates them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import service
from dproxy_auth.deps import AdminActor, CurrentActor, RuntimeDep, SessionDep
from dproxy_auth.errors import ApiError
from dproxy_shared.models import AccessLevel, Group, GroupMember, PersonalAccessToken, User
from dproxy_shared.oci.reference import PROXY_INFIX
from dproxy_shared.repositories import groups, users

router = APIRouter(prefix="/api/v4")


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    name: str = ""
    email: str | None = None
    password: str | None = None
    admin: bool = False


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    scopes: list[str]
    expires_at: date | None = None


class GroupCreate(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    path: str = Field(min_length=1, max_length=255)
    parent_id: int | None = None


class MemberCreate(BaseModel):
    user_id: int
    access_level: int


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "state": user.state,
        "email": user.email,
        "is_admin": user.admin,
        "bot": user.bot,
        "created_at": _iso(user.created_at),
    }


def token_json(token: PersonalAccessToken, secret: str | None = None) -> dict[str, Any]:
    active = not token.revoked and (token.expires_at is None or token.expires_at > date.today())
    body: dict[str, Any] = {
        "id": token.id,
        "name": token.name,
        "revoked": token.revoked,
        "created_at": _iso(token.created_at),
        "scopes": token.scope_list,
        "user_id": token.user_id,
        "last_used_at": _iso(token.last_used_at),
        "active": active,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }
    if secret is not None:
        body["token"] = secret
    return body


def group_json(group: Group, external_url: str) -> dict[str, Any]:
    host = external_url.split("://", 1)[-1]
    return {
        "id": group.id,
        "name": group.name,
        "path": group.path,
        "full_path": group.full_path,
        "full_name": group.full_path.replace("/", " / "),
        "parent_id": group.parent_id,
        "visibility": "private",
        "created_at": _iso(group.created_at),
        "dependency_proxy_image_prefix": f"{host}/{group.full_path}/{PROXY_INFIX}",
    }


def member_json(member: GroupMember, user: User) -> dict[str, Any]:
    return {
        **user_json(user),
        "access_level": member.access_level,
        "expires_at": member.expires_at.isoformat() if member.expires_at else None,
    }


async def _group(session: AsyncSession, group_ref: str) -> Group:
    """`:id` is a numeric id or a URL-encoded full path, as in GitLab."""
    group = (
        await groups.get(session, int(group_ref))
        if group_ref.isdigit()
        else await groups.get_by_full_path(session, group_ref)
    )
    if group is None:
        raise ApiError(404, "404 Group Not Found")
    return group


async def _require_owner(session: AsyncSession, actor: CurrentActor, group: Group) -> None:
    if actor.user.admin:
        return
    assert actor.user.id is not None
    level = await groups.effective_access_level(session, user_id=actor.user.id, group=group)
    if level < AccessLevel.OWNER:
        raise ApiError(403, "403 Forbidden")


def _raise_for(exc: Exception) -> ApiError:
    if isinstance(exc, service.Conflict):
        return ApiError(409, str(exc))
    return ApiError(400, str(exc))


GroupRef = Annotated[str, Path(description="Numeric id or URL-encoded full path")]


@router.get("/user", tags=["users"])
async def current_user(actor: CurrentActor) -> dict[str, Any]:
    return user_json(actor.user)


@router.get("/users", tags=["users"])
async def list_users(session: SessionDep, _admin: AdminActor) -> list[dict[str, Any]]:
    return [user_json(user) for user in await users.list_all(session)]


@router.post("/users", status_code=201, tags=["users"])
async def create_user(body: UserCreate, session: SessionDep, _admin: AdminActor) -> dict[str, Any]:
    try:
        user = await service.create_user(
            session,
            username=body.username,
            password=body.password,
            name=body.name,
            email=body.email,
            admin=body.admin,
        )
    except (service.Conflict, service.ValidationFailed) as exc:
        raise _raise_for(exc) from exc
    return user_json(user)


@router.post("/users/{user_id}/personal_access_tokens", status_code=201, tags=["tokens"])
async def create_user_token(
    user_id: int, body: TokenCreate, session: SessionDep, _admin: AdminActor
) -> dict[str, Any]:
    user = await users.get(session, user_id)
    if user is None:
        raise ApiError(404, "404 User Not Found")
    try:
        token, secret = await service.create_personal_access_token(
            session, user=user, name=body.name, scopes=body.scopes, expires_at=body.expires_at
        )
    except service.ValidationFailed as exc:
        raise _raise_for(exc) from exc
    return token_json(token, secret)


@router.get("/groups", tags=["groups"])
async def list_groups(
    session: SessionDep, runtime: RuntimeDep, _actor: CurrentActor
) -> list[dict[str, Any]]:
    return [group_json(g, runtime.settings.external_url) for g in await groups.list_all(session)]


@router.post("/groups", status_code=201, tags=["groups"])
async def create_group(
    body: GroupCreate, session: SessionDep, runtime: RuntimeDep, actor: CurrentActor
) -> dict[str, Any]:
    parent = await _group(session, str(body.parent_id)) if body.parent_id else None
    if parent is not None:
        await _require_owner(session, actor, parent)
    elif not actor.user.admin:
        raise ApiError(403, "403 Forbidden")
    try:
        group = await service.create_group(session, name=body.name, path=body.path, parent=parent)
        if not actor.user.admin:
            await service.add_member(
                session, group=group, user=actor.user, access_level=AccessLevel.OWNER
            )
    except (service.Conflict, service.ValidationFailed) as exc:
        raise _raise_for(exc) from exc
    return group_json(group, runtime.settings.external_url)


@router.get("/groups/{group_id:path}/members", tags=["members"])
async def list_members(
    group_id: GroupRef, session: SessionDep, actor: CurrentActor
) -> list[dict[str, Any]]:
    group = await _group(session, group_id)
    await _require_owner(session, actor, group)
    assert group.id is not None
    result = []
    for member in await groups.direct_members(session, group.id):
        user = await users.get(session, member.user_id)
        if user is not None:
            result.append(member_json(member, user))
    return result


@router.post("/groups/{group_id:path}/members", status_code=201, tags=["members"])
async def add_member(
    group_id: GroupRef, body: MemberCreate, session: SessionDep, actor: CurrentActor
) -> dict[str, Any]:
    group = await _group(session, group_id)
    await _require_owner(session, actor, group)
    user = await users.get(session, body.user_id)
    if user is None:
        raise ApiError(404, "404 User Not Found")
    try:
        member = await service.add_member(
            session, group=group, user=user, access_level=body.access_level
        )
    except service.ValidationFailed as exc:
        raise _raise_for(exc) from exc
    return member_json(member, user)


@router.get("/groups/{group_id:path}", tags=["groups"])
async def get_group(
    group_id: GroupRef, session: SessionDep, runtime: RuntimeDep, actor: CurrentActor
) -> dict[str, Any]:
    group = await _group(session, group_id)
    if not actor.user.admin:
        assert actor.user.id is not None
        level = await groups.effective_access_level(session, user_id=actor.user.id, group=group)
        if level < AccessLevel.GUEST:
            raise ApiError(404, "404 Group Not Found")
    return group_json(group, runtime.settings.external_url)
