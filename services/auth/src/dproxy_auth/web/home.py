"""The landing page: the signed-in user's groups (admins: every group)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response

from dproxy_auth.deps import SessionDep
from dproxy_auth.web import rendering
from dproxy_auth.web.deps import ROLE_NAMES, ViewerDep, page_context
from dproxy_auth.web.paging import PageQuery, Pager
from dproxy_auth.web.routing import page_router
from dproxy_shared import access
from dproxy_shared.models import Group
from dproxy_shared.repositories import groups, lifecycle

router = page_router()


@dataclass(frozen=True, slots=True)
class GroupRow:
    group: Group
    role: str
    image_count: int
    total_size_bytes: int

    @property
    def depth(self) -> int:
        return self.group.full_path.count("/")


@router.get("/")
async def home(
    request: Request, viewer: ViewerDep, session: SessionDep, page: PageQuery = 1
) -> Response:
    pager = Pager(request, page)
    found, total = await groups.list_page(
        session, window=pager.window, visible_to=None if viewer.admin else viewer.user.id
    )
    rows: list[GroupRow] = []
    for group in found:
        assert group.id is not None
        level = await access.access_level(session, viewer.actor, group)
        stats = await lifecycle.stats(session, group.id)
        role = "Admin" if viewer.admin else ROLE_NAMES.get(level, "")
        rows.append(GroupRow(group, role, stats.image_count, stats.total_size_bytes))
    context = page_context(request, viewer, nav="home", rows=rows, pager=pager.of(total))
    return rendering.render("home.html", context)
