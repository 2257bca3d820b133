"""Sign-in and sign-out (`/users/sign_in`, GitLab's URL).

Sign-in takes a password only, as GitLab's form does (tokens are for clients), and shares
`/jwt/auth`'s brute-force counters: failures here count towards the same ban, and a banned
address cannot sign in either.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from dproxy_auth import actors
from dproxy_auth.brute_force import BruteForceGuard
from dproxy_auth.deps import PasswordsDep, RuntimeDep, SessionDep
from dproxy_auth.errors import ApiError
from dproxy_auth.web import rendering
from dproxy_auth.web.deps import OptionalViewerDep, page_context
from dproxy_auth.web.routing import SIGN_IN_PATH, codec, page_router, safe_redirect_target
from dproxy_auth.web.routing import web_session as current_session

router = page_router()

Target = Annotated[str, Query(max_length=2048)]


def _form(
    request: Request,
    *,
    username: str = "",
    redirect_to: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    context = page_context(
        request, None, username=username, redirect_to=safe_redirect_target(redirect_to), error=error
    )
    return rendering.render("sign_in.html", context, status_code=status_code)


@router.get(SIGN_IN_PATH)
async def sign_in_form(
    request: Request, viewer: OptionalViewerDep, redirect_to: Target = ""
) -> Response:
    if viewer is not None:
        return RedirectResponse(safe_redirect_target(redirect_to), status_code=302)
    return _form(request, redirect_to=redirect_to)


@router.post(SIGN_IN_PATH)
async def sign_in(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    passwords: PasswordsDep,
    username: Annotated[str, Form(max_length=255)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    redirect_to: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    guard = BruteForceGuard(runtime, request.client.host if request.client else "unknown")
    try:
        await guard.refuse_if_banned()
    except ApiError as exc:
        response = _form(
            request,
            username=username,
            redirect_to=redirect_to,
            error="Too many failed sign-in attempts from your address. Try again later.",
            status_code=429,
        )
        response.headers.update(exc.headers)
        return response
    if not username or not password:
        return _form(
            request,
            username=username,
            redirect_to=redirect_to,
            error="Enter your username and password.",
            status_code=400,
        )
    actor = await actors.from_password(session, username, password, passwords=passwords)
    if actor is None or actor.user is None:
        await guard.record_failure()
        return _form(
            request,
            username=username,
            redirect_to=redirect_to,
            error="Invalid username or password.",
            status_code=401,
        )
    current_session(request).sign_in(actor.user)
    return RedirectResponse(safe_redirect_target(redirect_to), status_code=303)


@router.post("/users/sign_out")
async def sign_out(request: Request) -> Response:
    web = current_session(request)
    if web.user_id is not None:
        await codec(request).revoke(web)
    web.sign_out()
    web.set_flash("info", "Signed out successfully.")
    return RedirectResponse(SIGN_IN_PATH, status_code=303)
