"""User settings > Personal access tokens (`/-/user_settings/personal_access_tokens`).

Creating and revoking go through `service`, as the API does. A new token's value is in the
response to the form that created it and nowhere else: the page is `no-store`, and the value
is never put in the session cookie or any cache.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import Form, Path, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import service
from dproxy_auth.deps import SessionDep
from dproxy_auth.routes.api.schemas import MAX_ID, PersonalAccessTokenCreate
from dproxy_auth.tokens import PAT_SCOPES
from dproxy_auth.web import rendering
from dproxy_auth.web.deps import Viewer, ViewerDep, page_context
from dproxy_auth.web.paging import PageQuery, Pager
from dproxy_auth.web.routing import PageError, page_router, web_session
from dproxy_shared import access
from dproxy_shared.repositories import tokens

router = page_router()

PATH = "/-/user_settings/personal_access_tokens"
DEFAULT_LIFETIME = timedelta(days=30)  # GitLab's suggested expiry
# GitLab's wording, adapted to what each scope means for a Dependency Proxy.
SCOPES = {
    "read_registry": "Pull images through the Dependency Proxy (docker login, CI, Kubernetes).",
    "api": "Complete read and write access to the API, and pulling images.",
    "read_api": "Read access to the API: groups, their cache and settings.",
    "read_user": "Read your profile through the /user API endpoint.",
    "write_registry": "Accepted for GitLab compatibility; the proxy itself is read-only.",
}
assert set(SCOPES) == PAT_SCOPES


async def _page(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    page: int = 1,
    *,
    new_token: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, object] | None = None,
    status_code: int = 200,
) -> Response:
    pager = Pager(request, page)
    found, total = await tokens.personal_access_tokens_page(
        session, window=pager.window, user_id=viewer.user.id
    )
    rows = [(token, access.personal_access_token_is_valid(token)) for token in found]
    context = page_context(
        request,
        viewer,
        nav="tokens",
        rows=rows,
        pager=pager.of(total),
        scopes=SCOPES,
        new_token=new_token,
        errors=errors or {},
        values=values
        or {
            "name": "",
            "expires_at": (date.today() + DEFAULT_LIFETIME).isoformat(),
            "scopes": [],
        },
        min_date=(date.today() + timedelta(days=1)).isoformat(),
    )
    return rendering.render("tokens.html", context, status_code=status_code)


@router.get(PATH)
async def tokens_page(
    request: Request, viewer: ViewerDep, session: SessionDep, page: PageQuery = 1
) -> Response:
    return await _page(request, viewer, session, page)


@router.post(PATH)
async def create_token(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    form = await request.form()
    name = str(form.get("name") or "").strip()
    expires_at = str(form.get("expires_at") or "").strip()
    scopes = [str(scope) for scope in form.getlist("scopes")]
    values: dict[str, object] = {"name": name[:255], "expires_at": expires_at, "scopes": scopes}
    errors: dict[str, str] = {}
    body: PersonalAccessTokenCreate | None = None
    try:
        body = PersonalAccessTokenCreate.model_validate(
            {"name": name, "scopes": scopes, "expires_at": expires_at or None}
        )
    except ValidationError as exc:
        fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        if "name" in fields:
            errors["name"] = "Enter a name of at most 255 characters."
        if "scopes" in fields:
            errors["scopes"] = "Select at least one scope."
        if "expires_at" in fields:
            errors["expires_at"] = "Enter a date, or leave it empty for a token that never expires."
    if body is not None:
        try:
            token, secret = await service.create_personal_access_token(
                session,
                user=viewer.user,
                name=body.name,
                scopes=body.scopes,
                expires_at=body.expires_at,
            )
        except service.ValidationFailed as exc:
            message = str(exc)
            errors["expires_at" if "expires_at" in message else "scopes"] = (
                "Pick a date in the future." if "expires_at" in message else message
            )
        else:
            web_session(request).set_flash(
                "success", f"Your new personal access token “{token.name}” has been created."
            )
            return await _page(request, viewer, session, new_token=secret, status_code=201)
    return await _page(request, viewer, session, errors=errors, values=values, status_code=400)


@router.post(PATH + "/{token_id}/revoke")
async def revoke_token(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    token_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    confirmed: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    token = await tokens.get_personal_access_token(session, token_id)
    # Someone else's token does not exist here, even for an admin: this page is your own.
    if token is None or token.user_id != viewer.user.id:
        raise PageError(404)
    if confirmed != "yes":
        context = page_context(
            request,
            viewer,
            nav="tokens",
            title="Revoke token",
            message=f"Revoke the token “{token.name}”? Anything using it stops working within "
            "seconds. This cannot be undone.",
            action=f"{PATH}/{token_id}/revoke",
            button="Revoke",
            cancel=PATH,
        )
        return rendering.render("confirm.html", context)
    if access.personal_access_token_is_valid(token):
        await service.revoke_personal_access_token(session, token=token)
        web_session(request).set_flash("success", f"Revoked the token “{token.name}”.")
    return RedirectResponse(PATH, status_code=303)
