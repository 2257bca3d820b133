"""Users: `/user` for the caller, `/users` for admins (GitLab's Users API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from dproxy_auth import service
from dproxy_auth.deps import AdminDep, CallerDep, SessionDep
from dproxy_auth.routes.api._routing import CONFLICT, resource_router
from dproxy_auth.routes.api.lookups import PathUser
from dproxy_auth.routes.api.pagination import PaginationDep
from dproxy_auth.routes.api.schemas import UserCreate, UserOut
from dproxy_shared.repositories import users

router = resource_router("users")

SearchText = Annotated[str | None, Query(max_length=255)]


@router.get("/user", summary="The caller")
async def current_user(caller: CallerDep) -> UserOut:
    return UserOut.of(caller.user)


@router.get("/users", summary="List users (admin)")
async def list_users(
    session: SessionDep,
    _admin: AdminDep,
    pages: PaginationDep,
    username: SearchText = None,
    search: SearchText = None,
) -> list[UserOut]:
    found, total = await users.list_page(
        session, window=pages.window, username=username, search=search
    )
    pages.publish(total)
    return [UserOut.of(user) for user in found]


@router.post("/users", status_code=201, responses=CONFLICT, summary="Create a user (admin)")
async def create_user(_admin: AdminDep, body: UserCreate, session: SessionDep) -> UserOut:
    user = await service.create_user(
        session,
        username=body.username,
        password=body.password,
        name=body.name or body.username,
        email=body.email,
        admin=body.admin,
    )
    return UserOut.of(user)


@router.get(
    "/users/{user_id}",
    summary="One user (email and admin flag for admins and the user themself)",
    response_model_exclude_none=True,
)
async def get_user(user: PathUser, caller: CallerDep) -> UserOut:
    return UserOut.of(user, private=caller.admin or user.id == caller.user.id)


@router.delete("/users/{user_id}", status_code=204, summary="Delete a user (admin)")
async def delete_user(admin: AdminDep, user: PathUser, session: SessionDep) -> None:
    await service.delete_user(session, user=user, by=admin.user)


@router.post("/users/{user_id}/block", status_code=201, summary="Block a user (admin)")
async def block_user(admin: AdminDep, user: PathUser, session: SessionDep) -> bool:
    await service.set_user_state(session, user=user, state="blocked", by=admin.user)
    return True


@router.post("/users/{user_id}/unblock", status_code=201, summary="Unblock a user (admin)")
async def unblock_user(admin: AdminDep, user: PathUser, session: SessionDep) -> bool:
    await service.set_user_state(session, user=user, state="active", by=admin.user)
    return True
