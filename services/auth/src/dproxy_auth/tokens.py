"""Token secrets in GitLab's formats, so secret scanners recognise a leaked one."""

from __future__ import annotations

import secrets

PERSONAL_ACCESS_TOKEN_PREFIX = "glpat-"
PAT_SCOPES = frozenset({"api", "read_api", "read_user", "read_registry", "write_registry"})
# GitLab's rule is `api`, or read_registry together with write_registry; dproxy also accepts
# read_registry alone for pulls (documented in the README).
REGISTRY_PULL_SCOPES = frozenset({"api", "read_registry"})


def new_personal_access_token() -> str:
    return PERSONAL_ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(15)
