"""Request and response bodies of `/api/v4`, with GitLab's field names.

Every string has a length limit and every integer a range that the database can hold, so
oversized input is a 400 here rather than an error in the database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, WithJsonSchema

from dproxy_auth.ci import DEFAULT_JOB_TIMEOUT, MAX_JOB_TIMEOUT, MIN_JOB_TIMEOUT
from dproxy_auth.tokens import DEPLOY_TOKEN_SCOPES, PAT_SCOPES
from dproxy_shared import access
from dproxy_shared.models import (
    AccessLevel,
    ApplicationSetting,
    CiJobToken,
    CiRunner,
    DeployToken,
    Group,
    GroupMember,
    PersonalAccessToken,
    User,
)

MAX_ID = 2**31 - 1  # Postgres `integer` ids

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
# Printable text: control characters (NUL above all) have no place in names.
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Username = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]
GroupPath = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]
Email = Annotated[
    str, StringConstraints(max_length=255, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+$")
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
AccessLevelValue = Literal[10, 20, 30, 40, 50]
# The allowed values live in `dproxy_auth.tokens`; the schema lists them for clients.
PatScope = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(PAT_SCOPES)})]
DeployScope = Annotated[
    str, WithJsonSchema({"type": "string", "enum": sorted(DEPLOY_TOKEN_SCOPES)})
]


def _as_utc(value: datetime) -> datetime:
    """Naive times are UTC, as GitLab reads them; a time no UTC datetime can hold is refused."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("datetime out of range") from exc


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


# -- requests -------------------------------------------------------------------------------


class UserCreate(BaseModel):
    username: Username
    name: Text | None = None
    email: Email | None = None
    password: Password | None = None
    admin: bool = False


class PersonalAccessTokenCreate(BaseModel):
    name: Text
    scopes: Annotated[list[PatScope], Field(min_length=1, max_length=10)]
    expires_at: date | None = None


class TokenRotate(BaseModel):
    expires_at: date | None = Field(default=None, description="Default: one week from today")


class GroupCreate(BaseModel):
    name: Text
    path: GroupPath
    parent_id: Id | None = None


class GroupUpdate(BaseModel):
    name: Text | None = None


class MemberCreate(BaseModel):
    user_id: Id
    access_level: AccessLevelValue
    expires_at: date | None = None


class MemberUpdate(BaseModel):
    access_level: AccessLevelValue
    expires_at: date | None = None


class DeployTokenCreate(BaseModel):
    name: Text
    scopes: Annotated[list[DeployScope], Field(min_length=1, max_length=10)]
    username: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.+_-]+$")
        ]
        | None
    ) = Field(default=None, description="Default: gitlab+deploy-token-<id>")
    expires_at: UtcDateTime | None = None


class GroupAccessTokenCreate(BaseModel):
    name: Text
    scopes: Annotated[list[PatScope], Field(min_length=1, max_length=10)]
    access_level: AccessLevelValue = 40  # Maintainer, GitLab's default
    expires_at: date | None = None


class ApplicationSettingsUpdate(BaseModel):
    container_registry_token_expire_delay: (
        Annotated[int, Field(ge=1, le=525_600, description="Registry token lifetime, minutes")]
        | None
    ) = None
    dependency_proxy_enabled: bool | None = None


# -- responses ------------------------------------------------------------------------------


class UserOut(BaseModel):
    id: int
    username: str
    name: str
    state: str
    locked: bool
    bot: bool
    created_at: datetime
    # Only for admins and the user themself (left out otherwise).
    email: str | None = None
    is_admin: bool | None = None

    @classmethod
    def of(cls, user: User, *, private: bool = True) -> UserOut:
        assert user.id is not None
        return cls(
            id=user.id,
            username=user.username,
            name=user.name,
            state=user.state,
            locked=False,
            bot=user.bot,
            created_at=user.created_at,
            email=user.email if private else None,
            is_admin=user.admin if private else None,
        )


class MemberOut(BaseModel):
    id: int
    username: str
    name: str
    state: str
    locked: bool
    bot: bool
    access_level: int
    expires_at: date | None
    created_at: datetime
    membership_state: str

    @classmethod
    def of(cls, member: GroupMember, user: User) -> MemberOut:
        assert user.id is not None
        return cls(
            id=user.id,
            username=user.username,
            name=user.name,
            state=user.state,
            locked=False,
            bot=user.bot,
            access_level=member.access_level,
            expires_at=member.expires_at,
            created_at=member.created_at,
            membership_state="active",
        )


class PersonalAccessTokenOut(BaseModel):
    id: int
    name: str
    revoked: bool
    created_at: datetime
    scopes: list[str]
    user_id: int
    last_used_at: datetime | None
    active: bool
    expires_at: date | None

    @classmethod
    def fields_of(cls, token: PersonalAccessToken) -> dict[str, object]:
        assert token.id is not None
        return {
            "id": token.id,
            "name": token.name,
            "revoked": token.revoked,
            "created_at": token.created_at,
            "scopes": token.scope_list,
            "user_id": token.user_id,
            "last_used_at": token.last_used_at,
            "active": access.personal_access_token_is_valid(token),
            "expires_at": token.expires_at,
        }

    @classmethod
    def of(cls, token: PersonalAccessToken) -> PersonalAccessTokenOut:
        return cls.model_validate(cls.fields_of(token))


class NewPersonalAccessToken(PersonalAccessTokenOut):
    """Only the response that creates (or rotates) a token carries its value."""

    token: str

    @classmethod
    def create(cls, token: PersonalAccessToken, secret: str) -> NewPersonalAccessToken:
        return cls.model_validate({**cls.fields_of(token), "token": secret})


class GroupAccessTokenOut(PersonalAccessTokenOut):
    access_level: int

    @classmethod
    def with_level(cls, token: PersonalAccessToken, level: int | None) -> GroupAccessTokenOut:
        fields = cls.fields_of(token)
        return cls.model_validate({**fields, "access_level": level or AccessLevel.NO_ACCESS})


class NewGroupAccessToken(GroupAccessTokenOut):
    token: str

    @classmethod
    def create(cls, token: PersonalAccessToken, level: int, secret: str) -> NewGroupAccessToken:
        return cls.model_validate({**cls.fields_of(token), "access_level": level, "token": secret})


class DeployTokenOut(BaseModel):
    id: int
    name: str
    username: str
    expires_at: datetime | None
    scopes: list[str]
    revoked: bool
    expired: bool

    @classmethod
    def fields_of(cls, token: DeployToken) -> dict[str, object]:
        assert token.id is not None
        return {
            "id": token.id,
            "name": token.name,
            "username": token.username,
            "expires_at": token.expires_at,
            "scopes": token.scope_list,
            "revoked": token.revoked,
            "expired": token.expires_at is not None and token.expires_at <= datetime.now(UTC),
        }

    @classmethod
    def of(cls, token: DeployToken) -> DeployTokenOut:
        return cls.model_validate(cls.fields_of(token))


class NewDeployToken(DeployTokenOut):
    token: str

    @classmethod
    def create(cls, token: DeployToken, secret: str) -> NewDeployToken:
        return cls.model_validate({**cls.fields_of(token), "token": secret})


class GroupOut(BaseModel):
    id: int
    name: str
    path: str
    description: str
    visibility: str
    full_path: str
    parent_id: int | None
    created_at: datetime

    @classmethod
    def of(cls, group: Group) -> GroupOut:
        assert group.id is not None
        return cls(
            id=group.id,
            name=group.name,
            path=group.path,
            description="",
            visibility="private",  # dproxy has no public groups
            full_path=group.full_path,
            parent_id=group.parent_id,
            created_at=group.created_at,
        )


class Accepted(BaseModel):
    message: str = "202 Accepted"


class ApplicationSettingsOut(BaseModel):
    container_registry_token_expire_delay: int
    dependency_proxy_enabled: bool

    @classmethod
    def of(cls, setting: ApplicationSetting) -> ApplicationSettingsOut:
        return cls(
            container_registry_token_expire_delay=setting.container_registry_token_expire_delay,
            dependency_proxy_enabled=setting.dependency_proxy_enabled,
        )


# -- CI runners and jobs --------------------------------------------------------------------


class RunnerCreate(BaseModel):
    runner_type: Literal["instance_type"] = Field(
        "instance_type", description="dproxy has instance runners only"
    )
    description: Annotated[
        str, StringConstraints(max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$")
    ] = ""


class RunnerOut(BaseModel):
    id: int
    description: str
    runner_type: Literal["instance_type"] = "instance_type"
    active: bool = True
    created_at: datetime
    contacted_at: datetime | None

    @classmethod
    def of(cls, runner: CiRunner) -> RunnerOut:
        assert runner.id is not None
        return cls(
            id=runner.id,
            description=runner.description,
            created_at=runner.created_at,
            contacted_at=runner.contacted_at,
        )


class NewRunner(BaseModel):
    """GitLab's answer to `POST /user/runners`: the token is shown only here."""

    id: int
    token: str
    token_expires_at: datetime | None = None


class CiJobCreate(BaseModel):
    group_id: Id = Field(description="The group the job's project belongs to")
    user_id: Id = Field(description="The user the job runs as")
    timeout: Annotated[int, Field(ge=MIN_JOB_TIMEOUT, le=MAX_JOB_TIMEOUT)] = Field(
        DEFAULT_JOB_TIMEOUT,
        description="Seconds until the job's token expires, if the job is not ended first",
    )


class CiJobOut(BaseModel):
    id: int
    group_id: int
    user_id: int
    runner_id: int | None
    status: Literal["running", "finished", "expired"]
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None

    @classmethod
    def fields_of(cls, job: CiJobToken) -> dict[str, object]:
        assert job.id is not None
        status = (
            "finished"
            if job.finished_at is not None
            else "running"
            if access.job_token_is_valid(job)
            else "expired"
        )
        return {
            "id": job.id,
            "group_id": job.group_id,
            "user_id": job.user_id,
            "runner_id": job.runner_id,
            "status": status,
            "created_at": job.created_at,
            "expires_at": job.expires_at,
            "finished_at": job.finished_at,
        }

    @classmethod
    def of(cls, job: CiJobToken) -> CiJobOut:
        return cls.model_validate(cls.fields_of(job))


class NewCiJob(CiJobOut):
    """The job's token and predefined variables, shown only when the job starts."""

    token: str
    variables: dict[str, str] = Field(
        description="CI_DEPENDENCY_PROXY_* and DOCKER_AUTH_CONFIG, as GitLab predefines them"
    )

    @classmethod
    def create(cls, job: CiJobToken, secret: str, variables: dict[str, str]) -> NewCiJob:
        return cls.model_validate({**cls.fields_of(job), "token": secret, "variables": variables})
