"""Credentials other than passwords: personal/group access, deploy and CI job tokens.

Secrets are stored only as sha256 digests (they are high-entropy, so a fast hash suffices);
lookups go through the digest's unique index, never by comparing secrets.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta

from sqlalchemy import and_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from dproxy_shared.models import (
    CiJobToken,
    CiRunner,
    DeployToken,
    GroupMember,
    PersonalAccessToken,
    utcnow,
)
from dproxy_shared.repositories._paging import Window, page


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def get_personal_access_token(
    session: AsyncSession, token_id: int
) -> PersonalAccessToken | None:
    return await session.get(PersonalAccessToken, token_id)


async def find_personal_access_token(
    session: AsyncSession, secret: str
) -> PersonalAccessToken | None:
    result = await session.exec(
        select(PersonalAccessToken).where(PersonalAccessToken.token_digest == token_digest(secret))
    )
    return result.first()


async def create_personal_access_token(
    session: AsyncSession,
    *,
    user_id: int,
    name: str,
    secret: str,
    scopes: list[str],
    expires_at: date | None,
    resource_group_id: int | None = None,
) -> PersonalAccessToken:
    token = PersonalAccessToken(
        user_id=user_id,
        name=name,
        token_digest=token_digest(secret),
        scopes=" ".join(sorted(set(scopes))),
        expires_at=expires_at,
        resource_group_id=resource_group_id,
    )
    session.add(token)
    await session.flush()
    return token


async def list_personal_access_tokens(
    session: AsyncSession, *, user_id: int | None = None, resource_group_id: int | None = None
) -> list[PersonalAccessToken]:
    query = select(PersonalAccessToken).order_by(col(PersonalAccessToken.id))
    if user_id is not None:
        query = query.where(PersonalAccessToken.user_id == user_id)
    if resource_group_id is not None:
        query = query.where(PersonalAccessToken.resource_group_id == resource_group_id)
    return list((await session.exec(query)).all())


# GitLab refreshes `last_used_at` at most every 10 minutes: writing it on every request
# would turn each read into a write that locks the token's row.
LAST_USED_PRECISION = timedelta(minutes=10)


async def mark_used(session: AsyncSession, token: PersonalAccessToken) -> None:
    now = utcnow()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_PRECISION:
        return
    token.last_used_at = now
    session.add(token)
    await session.flush()


async def revoke_personal_access_token(session: AsyncSession, token: PersonalAccessToken) -> None:
    token.revoked = True
    session.add(token)
    await session.flush()


async def get_deploy_token(session: AsyncSession, token_id: int) -> DeployToken | None:
    return await session.get(DeployToken, token_id)


async def find_deploy_token(session: AsyncSession, secret: str) -> DeployToken | None:
    result = await session.exec(
        select(DeployToken).where(DeployToken.token_digest == token_digest(secret))
    )
    return result.first()


async def create_deploy_token(
    session: AsyncSession,
    *,
    group_id: int,
    name: str,
    username: str | None,
    secret: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> DeployToken:
    token = DeployToken(
        group_id=group_id,
        name=name,
        # GitLab's default username needs the id; a unique placeholder until it is known.
        username=username or f"pending-{token_digest(secret)[:16]}",
        token_digest=token_digest(secret),
        scopes=" ".join(sorted(set(scopes))),
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    if not username:
        token.username = f"gitlab+deploy-token-{token.id}"
        session.add(token)
        await session.flush()
    return token


async def find_deploy_token_by_username(session: AsyncSession, username: str) -> DeployToken | None:
    result = await session.exec(select(DeployToken).where(DeployToken.username == username))
    return result.first()


async def list_deploy_tokens(session: AsyncSession, group_id: int) -> list[DeployToken]:
    result = await session.exec(
        select(DeployToken).where(DeployToken.group_id == group_id).order_by(col(DeployToken.id))
    )
    return list(result.all())


async def revoke_deploy_token(session: AsyncSession, token: DeployToken) -> None:
    token.revoked = True
    session.add(token)
    await session.flush()


async def get_job_token(session: AsyncSession, token_id: int) -> CiJobToken | None:
    return await session.get(CiJobToken, token_id)


async def find_job_token(session: AsyncSession, secret: str) -> CiJobToken | None:
    result = await session.exec(
        select(CiJobToken).where(CiJobToken.token_digest == token_digest(secret))
    )
    return result.first()


async def create_job_token(
    session: AsyncSession,
    *,
    group_id: int,
    user_id: int,
    runner_id: int | None,
    secret: str,
    expires_at: datetime,
) -> CiJobToken:
    job = CiJobToken(
        group_id=group_id,
        user_id=user_id,
        runner_id=runner_id,
        token_digest=token_digest(secret),
        expires_at=expires_at,
    )
    session.add(job)
    await session.flush()
    return job


async def finish_job(session: AsyncSession, job: CiJobToken) -> None:
    if job.finished_at is None:
        job.finished_at = utcnow()
        session.add(job)
        await session.flush()


async def create_runner(session: AsyncSession, *, description: str, secret: str) -> CiRunner:
    runner = CiRunner(description=description, token_digest=token_digest(secret))
    session.add(runner)
    await session.flush()
    return runner


async def get_runner(session: AsyncSession, runner_id: int) -> CiRunner | None:
    return await session.get(CiRunner, runner_id)


async def find_runner(session: AsyncSession, secret: str) -> CiRunner | None:
    result = await session.exec(
        select(CiRunner).where(CiRunner.token_digest == token_digest(secret))
    )
    return result.first()


async def mark_runner_contacted(session: AsyncSession, runner: CiRunner) -> None:
    """Like `mark_used`: written at most every LAST_USED_PRECISION."""
    now = utcnow()
    if runner.contacted_at is not None and now - runner.contacted_at < LAST_USED_PRECISION:
        return
    runner.contacted_at = now
    session.add(runner)
    await session.flush()


async def runners_page(session: AsyncSession, *, window: Window) -> tuple[list[CiRunner], int]:
    return await page(session, select(CiRunner).order_by(col(CiRunner.id)), window)


async def delete_runner(session: AsyncSession, runner: CiRunner) -> None:
    """Delete a runner; the database ends its jobs' tokens with it (cascade)."""
    await session.delete(runner)
    await session.flush()


async def personal_access_tokens_page(
    session: AsyncSession,
    *,
    window: Window,
    user_id: int | None = None,
    revoked: bool | None = None,
) -> tuple[list[PersonalAccessToken], int]:
    query = select(PersonalAccessToken).order_by(col(PersonalAccessToken.id))
    if user_id is not None:
        query = query.where(PersonalAccessToken.user_id == user_id)
    if revoked is not None:
        query = query.where(PersonalAccessToken.revoked == revoked)
    return await page(session, query, window)


def _group_access_tokens(group_id: int) -> Select[PersonalAccessToken, int]:
    # The bot's membership on the group gives the token's access level (None once removed).
    return (
        select(PersonalAccessToken, GroupMember.access_level)
        .outerjoin(
            GroupMember,
            and_(
                col(GroupMember.group_id) == col(PersonalAccessToken.resource_group_id),
                col(GroupMember.user_id) == col(PersonalAccessToken.user_id),
            ),
        )
        .where(PersonalAccessToken.resource_group_id == group_id)
        .order_by(col(PersonalAccessToken.id))
    )


async def group_access_tokens_page(
    session: AsyncSession, *, group_id: int, window: Window
) -> tuple[list[tuple[PersonalAccessToken, int | None]], int]:
    """A group's access tokens with the access level of each token's bot user."""
    return await page(session, _group_access_tokens(group_id), window)


async def get_group_access_token(
    session: AsyncSession, *, group_id: int, token_id: int
) -> tuple[PersonalAccessToken, int | None] | None:
    query = _group_access_tokens(group_id).where(PersonalAccessToken.id == token_id)
    row = (await session.exec(query)).first()
    return (row[0], row[1]) if row else None


async def resource_bot_ids(session: AsyncSession, group_ids: list[int]) -> list[int]:
    """The bot users behind the access tokens of these groups."""
    result = await session.exec(
        select(PersonalAccessToken.user_id)
        .where(col(PersonalAccessToken.resource_group_id).in_(group_ids))
        .distinct()
    )
    return list(result.all())


async def deploy_tokens_page(
    session: AsyncSession, *, group_id: int, window: Window, active: bool | None = None
) -> tuple[list[DeployToken], int]:
    query = (
        select(DeployToken).where(DeployToken.group_id == group_id).order_by(col(DeployToken.id))
    )
    if active is not None:
        usable = and_(
            col(DeployToken.revoked).is_(False),
            or_(col(DeployToken.expires_at).is_(None), col(DeployToken.expires_at) > utcnow()),
        )
        query = query.where(usable if active else ~usable)
    return await page(session, query, window)
