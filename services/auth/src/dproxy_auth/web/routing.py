"""The route class of every page: session cookie in and out, CSRF, and HTML errors.

Doing this in the route class rather than in each handler means no form can forget its CSRF
check, and no page answers an error with the API's JSON (`{"message": ...}` stays the API's).
It also keeps the pages' machinery off `/v2` and `/api`: nothing here runs for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from dproxy_auth import service
from dproxy_auth.web import rendering
from dproxy_auth.web.sessions import CSRF_FIELD, SessionCodec, WebSession

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGN_IN_PATH = "/users/sign_in"


class PageError(Exception):
    """Answered with an error page: 404 for what does not exist or may not be seen."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInRequired(Exception):
    """A signed-out visitor: sent to the sign-in page, and back here afterwards."""


def codec(request: Request) -> SessionCodec:
    sessions: SessionCodec = request.app.state.web_sessions
    return sessions


def web_session(request: Request) -> WebSession:
    session: WebSession = request.state.web_session
    return session


def safe_redirect_target(target: str | None) -> str:
    """A path on this site only: `//evil.example` and `/\\evil.example` are other sites."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(char) < 0x20 for char in target):
        return "/"
    return target


def sign_in_redirect(request: Request) -> Response:
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = "" if back == "/" else "?" + urlencode({"redirect_to": back})
    return RedirectResponse(SIGN_IN_PATH + query, status_code=302)


def error_page(request: Request, status: int, message: str = "") -> Response:
    phrase = HTTPStatus(status).phrase
    titles = {
        403: "The form could not be accepted",
        404: "Page not found",
    }
    texts = {
        404: "The page could not be found, or you do not have permission to see it. "
        "If you expected to see it here, ask a group Owner for access.",
    }
    context = {
        "request": request,
        "viewer": getattr(request.state, "viewer", None),
        "csrf_token": web_session(request).csrf,
        "flash": None,
        "status": status,
        "title": titles.get(status, phrase),
        "message": message or texts.get(status, phrase),
    }
    return rendering.render("error.html", context, status_code=status)


class WebRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            sessions = codec(request)
            session = sessions.load(request)
            request.state.web_session = session
            try:
                if request.method not in SAFE_METHODS:
                    # The form is parsed here and cached on the request for the handler.
                    form = await request.form()
                    token = form.get(CSRF_FIELD)
                    if not session.csrf_matches(token if isinstance(token, str) else None):
                        raise PageError(
                            403,
                            "The form has expired or did not come from this site. "
                            "Reload the page and try again.",
                        )
                response = await handler(request)
            except SignInRequired:
                response = sign_in_redirect(request)
            except PageError as exc:
                response = error_page(request, exc.status, exc.message)
            except RequestValidationError:
                response = error_page(request, 400, "The form was incomplete or malformed.")
            except service.Forbidden as exc:
                response = error_page(request, 403, str(exc))
            except (service.ValidationFailed, service.Conflict) as exc:
                response = error_page(request, 400, str(exc))
            if session.dirty:
                sessions.store(response, session)
            return response

        return page


def page_router() -> APIRouter:
    """Pages are HTML for people, not API: kept out of the OpenAPI document."""
    return APIRouter(route_class=WebRoute, include_in_schema=False)
