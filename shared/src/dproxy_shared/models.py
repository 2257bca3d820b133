"""Database tables (SQLModel). Names and columns follow GitLab's where GitLab has them.

Changing a table means adding an Alembic migration under `migrations/versions/`; the same
migrations run on SQLite (embedded default) and Postgres (production).
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# Constraint names that Alembic can refer to on every backend.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default_factory=None if nullable else utcnow,
        sa_type=UTCDateTime,
        nullable=nullable,
        index=index,
    )


class AccessLevel(enum.IntEnum):
    NO_ACCESS = 0
    GUEST = 10
    REPORTER = 20
    DEVELOPER = 30
    MAINTAINER = 40
    OWNER = 50


class CacheStatus(enum.IntEnum):
    """GitLab's `TtlExpirable` statuses for cached manifests and blobs."""

    DEFAULT = 0
    PENDING_DESTRUCTION = 1
    PROCESSING = 2
    ERROR = 3


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=255, unique=True)
    name: str = Field(default="", max_length=255)
    email: str | None = Field(default=None, max_length=255)
    password_hash: str | None = Field(default=None, max_length=255)
    admin: bool = False
    state: str = Field(default="active", max_length=32)
    bot: bool = False
    created_at: datetime = _ts()


class PersonalAccessToken(SQLModel, table=True):
    __tablename__ = "personal_access_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=255)
    # sha256 of the secret: tokens are high-entropy, so a fast hash is enough and lookups
    # go through a unique index instead of comparing secrets.
    token_digest: str = Field(max_length=64, unique=True)
    scopes: str = Field(default="", max_length=255)  # space-separated
    expires_at: date | None = None
    revoked: bool = False
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(nullable=True)
    # Set on a group access token: the group whose bot user owns it.
    resource_group_id: int | None = Field(
        default=None, foreign_key="groups.id", index=True, ondelete="CASCADE"
    )

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()


class DeployToken(SQLModel, table=True):
    """A group deploy token: valid for the group and all its subgroups."""

    __tablename__ = "deploy_tokens"

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=255)
    username: str = Field(max_length=255, unique=True)
    token_digest: str = Field(max_length=64, unique=True)
    scopes: str = Field(default="", max_length=255)  # space-separated
    expires_at: datetime | None = _ts(nullable=True)
    revoked: bool = False
    created_at: datetime = _ts()

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()


class CiRunner(SQLModel, table=True):
    """An instance runner (`glrt-…` token, created by an admin): it may start CI jobs."""

    __tablename__ = "ci_runners"

    id: int | None = Field(default=None, primary_key=True)
    description: str = Field(default="", max_length=255)
    token_digest: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    contacted_at: datetime | None = _ts(nullable=True)


class CiJobToken(SQLModel, table=True):
    """A CI job's token (`glcbt-…`): acts as the job's user until the job ends or expires."""

    __tablename__ = "ci_job_tokens"

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    # The runner that started the job (None: an admin did). Deleting a runner ends its jobs.
    runner_id: int | None = Field(
        default=None, foreign_key="ci_runners.id", index=True, ondelete="CASCADE"
    )
    token_digest: str = Field(max_length=64, unique=True)
    expires_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class Group(SQLModel, table=True):
    __tablename__ = "groups"
    __table_args__ = (sa.UniqueConstraint("parent_id", "path"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=255)
    path: str = Field(max_length=255)
    # Lowercased; GitLab paths are case-insensitive and registry URLs use them.
    full_path: str = Field(max_length=1024, unique=True)
    parent_id: int | None = Field(default=None, foreign_key="groups.id", ondelete="CASCADE")
    created_at: datetime = _ts()


class GroupMember(SQLModel, table=True):
    __tablename__ = "members"
    __table_args__ = (sa.UniqueConstraint("group_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    access_level: int = AccessLevel.GUEST
    expires_at: date | None = None
    created_at: datetime = _ts()


class DependencyProxyGroupSetting(SQLModel, table=True):
    __tablename__ = "dependency_proxy_group_settings"

    group_id: int = Field(foreign_key="groups.id", primary_key=True, ondelete="CASCADE")
    enabled: bool = True
    # Upstream credentials for this group's pulls; the secret is Fernet-encrypted (secrets.py).
    identity: str | None = Field(default=None, max_length=255)
    secret_encrypted: str | None = Field(default=None, sa_type=sa.Text)


class ApplicationSetting(SQLModel, table=True):
    __tablename__ = "application_settings"

    id: int | None = Field(default=None, primary_key=True)
    container_registry_token_expire_delay: int = 15  # minutes
    dependency_proxy_enabled: bool = True


class DependencyProxyManifest(SQLModel, table=True):
    """A group's cached manifest: one row per (image, tag) and per (image, digest)."""

    __tablename__ = "dependency_proxy_manifests"
    __table_args__ = (sa.UniqueConstraint("group_id", "image_name", "file_name", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", ondelete="CASCADE")
    image_name: str = Field(max_length=255)  # upstream repository, e.g. library/alpine
    file_name: str = Field(max_length=255)  # the tag or the digest the client asked for
    digest: str = Field(max_length=255, index=True)
    content_type: str = Field(max_length=255)
    size: int = Field(sa_type=sa.BigInteger)
    status: int = Field(default=CacheStatus.DEFAULT, index=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    read_at: datetime = _ts()
    # Last time upstream confirmed that this tag still points at `digest`.
    validated_at: datetime = _ts()


class DependencyProxyBlob(SQLModel, table=True):
    """A group's cached blob; the bytes live once per digest in the blob store."""

    __tablename__ = "dependency_proxy_blobs"
    __table_args__ = (sa.UniqueConstraint("group_id", "digest", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", ondelete="CASCADE")
    digest: str = Field(max_length=255, index=True)
    size: int = Field(sa_type=sa.BigInteger)
    status: int = Field(default=CacheStatus.DEFAULT, index=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    read_at: datetime = _ts()


class DependencyProxyImageTtlGroupPolicy(SQLModel, table=True):
    """A group's TTL policy: cached rows unread for `ttl` days are cleaned up when enabled."""

    __tablename__ = "dependency_proxy_image_ttl_group_policies"

    group_id: int = Field(foreign_key="groups.id", primary_key=True, ondelete="CASCADE")
    enabled: bool = False
    ttl: int = 90  # days
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
