"""A group's dependency proxy: the rules that the API and the web pages share.

Like `service`, functions take the session first and raise `ValidationFailed` or `Conflict`
(400 and 409 on the API, a message on a page).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth.service import Conflict, ValidationFailed
from dproxy_shared.crypto import SecretBox
from dproxy_shared.models import Group
from dproxy_shared.oci.reference import PROXY_INFIX
from dproxy_shared.repositories import cache, groups
from dproxy_shared.settings import Settings


def image_prefix(external_url: str, group: Group) -> str:
    """What the group's page and API put before an image name: the external URL's host as it
    is written (GitLab's page leaves a default port out; the CI variables, `ci.py`, do not)."""
    return f"{urlsplit(external_url).netloc.lower()}/{group.full_path.lower()}/{PROXY_INFIX}"


PURGE_RUNNING = "409 Conflict: a purge of this group's cache is already running"
CREDENTIALS_TOGETHER = "identity and secret are set (or cleared) together"


async def purge_cache(session: AsyncSession, *, group: Group) -> int:
    """Mark every cached manifest and blob of the group for destruction; the cleanup deletes
    them in the background. Returns how many rows were marked."""
    assert group.id is not None
    if await cache.purge_in_progress(session, group.id):
        raise Conflict(PURGE_RUNNING)
    return await cache.mark_group_for_destruction(session, group.id)


async def set_upstream_credentials(
    session: AsyncSession,
    *,
    settings: Settings,
    group: Group,
    identity: str | None,
    secret: str | None,
) -> None:
    """Both given, or both cleared (None or empty); the secret is stored encrypted."""
    assert group.id is not None
    if bool(identity) != bool(secret):
        raise ValidationFailed(CREDENTIALS_TOGETHER)
    encrypted = SecretBox(settings).encrypt(secret) if secret else None
    await groups.set_upstream_credentials(session, group.id, identity or None, encrypted)
