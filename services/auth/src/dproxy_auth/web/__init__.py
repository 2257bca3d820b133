"""The web pages: the Dependency Proxy screens of GitLab, at GitLab's URLs, served by the
auth service on the same origin as the API.

Server-rendered (Jinja2) with a little plain JavaScript (copy buttons, confirmation
dialogs); every page also works without it. Pages call the same services and permission
rules as `/api/v4`.

    /users/sign_in, /users/sign_out                    account
    /                                                  your groups
    /groups/<full path>/-/dependency_proxy             any member; "Clear cache" for Owners
    /groups/<full path>/-/settings/packages_and_registries   Owner
    /admin/application_settings                        admin
    /-/user_settings/personal_access_tokens            your tokens
"""

from __future__ import annotations

from fastapi import APIRouter

from dproxy_auth.web import (
    account,
    admin,
    assets,
    dependency_proxy,
    group_settings,
    home,
    tokens,
)
from dproxy_auth.web.sessions import SessionCodec

router = APIRouter()
# `dependency_proxy` goes last: its `/groups/<full path>` catch-all would otherwise take
# the settings page's URL.
for pages in (assets, account, home, tokens, admin, group_settings, dependency_proxy):
    router.include_router(pages.router)

__all__ = ["SessionCodec", "router"]
