"""Resolving credentials (Basic auth at `/jwt/auth`, tokens on the API) to an actor.

The validity rules themselves live in `dproxy_shared.access`, shared with the registry.
"""

from __future__ import annotations

import hmac

from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth.passwords import PasswordVerifier
from dproxy_auth.tokens import (
    DEPLOY_TOKEN_PREFIX,
    JOB_TOKEN_PREFIX,
    JOB_TOKEN_USERNAME,
    PERSONAL_ACCESS_TOKEN_PREFIX,
)
from dproxy_shared import access
from dproxy_shared.access import Actor
from dproxy_shared.repositories import tokens, users


async def from_basic_credentials(
    session: AsyncSession, username: str, secret: str, *, passwords: PasswordVerifier
) -> Actor | None:
    """Registry login: a token of any kind (by its GitLab prefix), else a password."""
    if username == JOB_TOKEN_USERNAME or secret.startswith(JOB_TOKEN_PREFIX):
        return await from_job_token(session, username, secret)
    if secret.startswith(DEPLOY_TOKEN_PREFIX):
        return await from_deploy_token(session, username, secret)
    if secret.startswith(PERSONAL_ACCESS_TOKEN_PREFIX):
        # Any username goes with a personal access token, as in GitLab.
        return await from_personal_access_token(session, secret)
    return await from_password(session, username, secret, passwords=passwords)


async def from_password(
    session: AsyncSession, username: str, password: str, *, passwords: PasswordVerifier
) -> Actor | None:
    user = await users.get_by_username(session, username)
    # Verified even for unknown users, so timing does not tell which usernames exist.
    valid = await passwords.verify(user.password_hash if user else None, password)
    if user is None or not valid or user.bot:
        return None
    return access.for_user(user)


async def from_personal_access_token(session: AsyncSession, secret: str) -> Actor | None:
    token = await tokens.find_personal_access_token(session, secret)
    actor = await access.for_personal_access_token(session, token) if token else None
    if token is not None and actor is not None:
        await tokens.mark_used(session, token)
    return actor


async def from_deploy_token(session: AsyncSession, username: str, secret: str) -> Actor | None:
    token = await tokens.find_deploy_token(session, secret)
    # GitLab requires the deploy token's own username alongside it.
    if token is None or not hmac.compare_digest(token.username.encode(), username.encode()):
        return None
    return access.for_deploy_token(token)


async def from_job_token(session: AsyncSession, username: str, secret: str) -> Actor | None:
    if username != JOB_TOKEN_USERNAME:
        return None
    token = await tokens.find_job_token(session, secret)
    return await access.for_job_token(session, token) if token else None
