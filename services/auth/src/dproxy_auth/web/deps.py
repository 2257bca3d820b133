"""Dependencies of the pages: who is looking, and at which group.

Permissions come from `dproxy_shared.access`, as on the API: a group the viewer may not read
and a group that does not exist are the same 404, and an Owner page is a 404 for anyone
below Owner (GitLab hides settings pages the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from dproxy_auth.deps import SessionDep
from dproxy_auth.web.routing import PageError, SignInRequired, codec, web_session
from dproxy_auth.web.sessions import password_fingerprint
from dproxy_shared import access
from dproxy_shared.access import Actor
from dproxy_shared.models import AccessLevel, Group, User
from dproxy_shared.repositories import groups, users

ROLE_NAMES: dict[int, str] = {
    AccessLevel.GUEST: "Guest",
    AccessLevel.REPORTER: "Reporter",
    AccessLevel.DEVELOPER: "Developer",
    AccessLevel.MAINTAINER: "Maintainer",
    AccessLevel.OWNER: "Owner",
}


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in user, as the actor the permission rules take."""

    user: User
    actor: Actor

    @property
    def admin(self) -> bool:
        return self.user.admin


async def _optional_viewer(request: Request, session: SessionDep) -> Viewer | None:
    web = web_session(request)
    if web.user_id is None:
        return None
    user = await users.get(session, web.user_id)
    # Blocked, deleted, a bot, a changed password, or signed out elsewhere: signed out here.
    actor = access.for_user(user) if user is not None and not user.bot else None
    if (
        user is None
        or actor is None
        or web.fingerprint != password_fingerprint(user)
        or await codec(request).revoked(web)
    ):
        web.sign_out()
        return None
    viewer = Viewer(user, actor)
    request.state.viewer = viewer  # for the header of error pages
    return viewer


async def _viewer(viewer: Annotated[Viewer | None, Depends(_optional_viewer)]) -> Viewer:
    if viewer is None:
        raise SignInRequired
    return viewer


async def _admin(viewer: Annotated[Viewer, Depends(_viewer)]) -> Viewer:
    if not viewer.admin:
        raise PageError(404)  # GitLab answers non-admins with a 404 on admin pages
    return viewer


OptionalViewerDep = Annotated[Viewer | None, Depends(_optional_viewer)]
ViewerDep = Annotated[Viewer, Depends(_viewer)]
AdminViewerDep = Annotated[Viewer, Depends(_admin)]


@dataclass(frozen=True, slots=True)
class GroupPage:
    group: Group
    level: int  # the viewer's effective access level on it

    @property
    def owner(self) -> bool:
        return self.level >= AccessLevel.OWNER

    @property
    def role(self) -> str:
        return ROLE_NAMES.get(self.level, "")


async def _group_page(full_path: str, viewer: ViewerDep, session: SessionDep) -> GroupPage:
    group = await groups.get_by_full_path(session, full_path)
    level = await access.access_level(session, viewer.actor, group) if group else 0
    if group is None or level < AccessLevel.GUEST:
        raise PageError(404)
    return GroupPage(group, level)


async def _owned_group_page(target: Annotated[GroupPage, Depends(_group_page)]) -> GroupPage:
    if not target.owner:
        raise PageError(404)
    return target


GroupPageDep = Annotated[GroupPage, Depends(_group_page)]
OwnedGroupPageDep = Annotated[GroupPage, Depends(_owned_group_page)]


def page_context(request: Request, viewer: Viewer | None, **values: Any) -> dict[str, Any]:
    """What every template gets: the viewer, the CSRF token, and a message left for this page."""
    web = web_session(request)
    return {
        "request": request,
        "viewer": viewer,
        "csrf_token": web.csrf,
        "flash": web.pop_flash(),
        **values,
    }
