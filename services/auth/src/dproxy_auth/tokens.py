"""Token secrets in GitLab's formats, so secret scanners recognise a leaked one."""

from __future__ import annotations

import secrets

PERSONAL_ACCESS_TOKEN_PREFIX = "glpat-"
DEPLOY_TOKEN_PREFIX = "gldt-"
JOB_TOKEN_PREFIX = "glcbt-"
JOB_TOKEN_USERNAME = "gitlab-ci-token"
RUNNER_TOKEN_PREFIX = "glrt-"

PAT_SCOPES = frozenset({"api", "read_api", "read_user", "read_registry", "write_registry"})
DEPLOY_TOKEN_SCOPES = frozenset(
    {
        "read_repository",
        "read_registry",
        "write_registry",
        "read_package_registry",
        "write_package_registry",
    }
)


def _secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(15)


def new_personal_access_token() -> str:
    return _secret(PERSONAL_ACCESS_TOKEN_PREFIX)


def new_deploy_token() -> str:
    return _secret(DEPLOY_TOKEN_PREFIX)


def new_job_token() -> str:
    return _secret(JOB_TOKEN_PREFIX)


def new_runner_token() -> str:
    return _secret(RUNNER_TOKEN_PREFIX)
