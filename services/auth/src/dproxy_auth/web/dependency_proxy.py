"""Group > Operate > Dependency Proxy: what the group's cache holds, and clearing it (Owner).

GitLab's URL, `/groups/<full path>/-/dependency_proxy`. Any member sees the page; only an
Owner sees (and may use) "Clear cache". Clearing marks the rows for destruction at once, and
the cleanup in the fetchers deletes them in the background, so the table shows them as
"Being removed" until then.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from dproxy_auth import group_proxy, service
from dproxy_auth.deps import RuntimeDep, SessionDep
from dproxy_auth.web import rendering
from dproxy_auth.web.deps import (
    GroupPage,
    GroupPageDep,
    OwnedGroupPageDep,
    Viewer,
    ViewerDep,
    page_context,
)
from dproxy_auth.web.paging import PageQuery, Pager
from dproxy_auth.web.routing import page_router, web_session
from dproxy_shared.models import CacheStatus
from dproxy_shared.repositories import cache, groups, lifecycle
from dproxy_shared.repositories._paging import Window

router = page_router()

SortKey = Literal[
    "last_pulled_desc",
    "last_pulled_asc",
    "name_asc",
    "name_desc",
    "size_desc",
    "size_asc",
    "created_desc",
    "created_asc",
]
DEFAULT_SORT: SortKey = "last_pulled_desc"
# Each column's first click sorts the way people usually want it: names A→Z, the rest
# largest or newest first.
COLUMN_DEFAULTS = {"name": "asc", "size": "desc", "last_pulled": "desc", "created": "desc"}
STATUS_LABELS = {
    CacheStatus.DEFAULT: ("Cached", "success"),
    CacheStatus.PENDING_DESTRUCTION: ("Being removed", "warning"),
    CacheStatus.PROCESSING: ("Being removed", "warning"),
    CacheStatus.ERROR: ("Error", "danger"),
}
MAX_SUBGROUPS = 50


def proxy_path(full_path: str) -> str:
    return f"/groups/{full_path}/-/dependency_proxy"


async def group_context(
    request: Request, viewer: Viewer, session: SessionDep, target: GroupPage, nav: str
) -> dict[str, object]:
    """What the group's sidebar and breadcrumbs need."""
    group = target.group
    assert group.id is not None
    segments = group.full_path.split("/")
    crumbs = [("/".join(segments[: i + 1]), segment) for i, segment in enumerate(segments[:-1])]
    return page_context(
        request,
        viewer,
        nav=nav,
        group=group,
        target=target,
        ancestors=crumbs,
        group_enabled=await groups.proxy_enabled(session, group.id),
        instance_enabled=(await groups.application_settings(session)).dependency_proxy_enabled,
    )


@router.get("/groups/{full_path:path}/-/dependency_proxy")
async def dependency_proxy(
    request: Request,
    viewer: ViewerDep,
    target: GroupPageDep,
    session: SessionDep,
    runtime: RuntimeDep,
    page: PageQuery = 1,
    sort: Annotated[str, Query(max_length=32)] = DEFAULT_SORT,
) -> Response:
    group = target.group
    assert group.id is not None
    column, _, direction = sort.rpartition("_")
    if column not in COLUMN_DEFAULTS or direction not in ("asc", "desc"):
        column, _, direction = DEFAULT_SORT.rpartition("_")
    pager = Pager(request, page)
    rows, total = await lifecycle.list_manifests_ordered(
        session,
        group.id,
        pager.window,
        order=column,  # type: ignore[arg-type]  # checked against COLUMN_DEFAULTS above
        descending=direction == "desc",
    )
    subgroups, subgroup_total = await groups.list_page(
        session,
        window=Window(offset=0, limit=MAX_SUBGROUPS),
        visible_to=None if viewer.admin else viewer.user.id,
        parent_id=group.id,
    )
    context = await group_context(request, viewer, session, target, "dependency_proxy")
    context.update(
        image_prefix=group_proxy.image_prefix(runtime.settings.external_url, group),
        stats=await lifecycle.stats(session, group.id),
        purging=await cache.purge_in_progress(session, group.id),
        rows=rows,
        pager=pager.of(total),
        sort_column=column,
        sort_direction=direction,
        column_defaults=COLUMN_DEFAULTS,
        status_labels=STATUS_LABELS,
        subgroups=subgroups,
        more_subgroups=subgroup_total - len(subgroups),
    )
    return rendering.render("dependency_proxy.html", context)


@router.post("/groups/{full_path:path}/-/dependency_proxy/clear_cache")
async def clear_cache(
    request: Request,
    viewer: ViewerDep,
    target: OwnedGroupPageDep,
    session: SessionDep,
    confirmed: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    path = proxy_path(target.group.full_path)
    if confirmed != "yes":
        # The page asks in a dialog; without JavaScript the form arrives unconfirmed and
        # the question is a page of its own.
        context = await group_context(request, viewer, session, target, "dependency_proxy")
        context.update(
            title="Clear the Dependency Proxy cache",
            message="Remove every cached image and blob of this group? Pulls afterwards fetch "
            "them from the upstream registry again, which counts against its rate limit.",
            action=f"{path}/clear_cache",
            button="Clear cache",
            cancel=path,
        )
        return rendering.render("confirm.html", context)
    web = web_session(request)
    try:
        marked = await group_proxy.purge_cache(session, group=target.group)
    except service.Conflict:
        web.set_flash(
            "danger",
            "The cache is still being cleared from an earlier request. Try again when the "
            "images listed as “Being removed” are gone.",
        )
    else:
        web.set_flash(
            "success",
            f"Clearing the cache: {marked} cached {'file' if marked == 1 else 'files'} will be "
            "removed in the background."
            if marked
            else "The cache was already empty.",
        )
    return RedirectResponse(path, status_code=303)


@router.get("/groups/{full_path:path}/-/settings")
@router.get("/groups/{full_path:path}/-/packages")
@router.get("/groups/{full_path:path}")
async def group_home(target: GroupPageDep) -> Response:
    """dproxy's group pages are its Dependency Proxy; GitLab's other group URLs lead there."""
    return RedirectResponse(proxy_path(target.group.full_path), status_code=302)
