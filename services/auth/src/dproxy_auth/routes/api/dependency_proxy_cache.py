"""What a group's dependency proxy holds, and its image TTL policy.

GitLab exposes these over GraphQL only (`Group.dependencyProxy*`); dproxy serves them as REST
with the GraphQL types' field names. Any member (Guest and up) reads; the Owner changes the
TTL policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from dproxy_auth import group_proxy
from dproxy_auth.deps import RuntimeDep, SessionDep
from dproxy_auth.routes.api._routing import resource_router
from dproxy_auth.routes.api.lookups import OwnedGroup, ReadableGroup
from dproxy_auth.routes.api.pagination import PaginationDep
from dproxy_shared.models import (
    CacheStatus,
    DependencyProxyBlob,
    DependencyProxyImageTtlGroupPolicy,
    DependencyProxyManifest,
)
from dproxy_shared.repositories import groups, lifecycle

router = resource_router("dependency proxy")

Status = Literal["default", "pending_destruction", "processing", "error"]


class ProxyOverview(BaseModel):
    image_prefix: str = Field(description="What to put before an image name to pull it")
    image_count: int = Field(description="Cached manifests")
    blob_count: int = Field(description="Cached blobs")
    total_size_bytes: int = Field(description="Size of the cached manifests and blobs")
    enabled: bool


class ManifestOut(BaseModel):
    id: int
    image_name: str
    file_name: str
    digest: str
    size: int
    content_type: str
    status: Status
    created_at: datetime
    read_at: datetime

    @classmethod
    def of(cls, row: DependencyProxyManifest) -> ManifestOut:
        assert row.id is not None
        return cls(
            id=row.id,
            image_name=row.image_name,
            file_name=row.file_name,
            digest=row.digest,
            size=row.size,
            content_type=row.content_type,
            status=_status(row.status),
            created_at=row.created_at,
            read_at=row.read_at,
        )


class BlobOut(BaseModel):
    id: int
    file_name: str
    digest: str
    size: int
    status: Status
    created_at: datetime
    read_at: datetime

    @classmethod
    def of(cls, row: DependencyProxyBlob) -> BlobOut:
        assert row.id is not None
        return cls(
            id=row.id,
            # GitLab names a blob's file after its digest.
            file_name=f"{row.digest.partition(':')[2]}.gz",
            digest=row.digest,
            size=row.size,
            status=_status(row.status),
            created_at=row.created_at,
            read_at=row.read_at,
        )


class TtlPolicy(BaseModel):
    enabled: bool = Field(description="Whether the cleanup removes unread images")
    ttl: Annotated[int, Field(ge=1, le=3650, description="Days an unread row is kept")]

    @classmethod
    def of(cls, policy: DependencyProxyImageTtlGroupPolicy) -> TtlPolicy:
        return cls(enabled=policy.enabled, ttl=policy.ttl)


class TtlPolicyUpdate(BaseModel):
    enabled: bool | None = None
    ttl: Annotated[int, Field(ge=1, le=3650, description="Days an unread row is kept")] | None = (
        None
    )


def _status(value: int) -> Status:
    name = CacheStatus(value).name.lower()
    assert name in ("default", "pending_destruction", "processing", "error")
    return name  # type: ignore[return-value]


@router.get("/groups/{group_id}/dependency_proxy", summary="The group's cache at a glance")
async def overview(group: ReadableGroup, session: SessionDep, runtime: RuntimeDep) -> ProxyOverview:
    assert group.id is not None
    stats = await lifecycle.stats(session, group.id)
    return ProxyOverview(
        image_prefix=group_proxy.image_prefix(runtime.settings.external_url, group),
        image_count=stats.image_count,
        blob_count=stats.blob_count,
        total_size_bytes=stats.total_size_bytes,
        enabled=await groups.proxy_enabled(session, group.id),
    )


@router.get("/groups/{group_id}/dependency_proxy/manifests", summary="Cached manifests")
async def list_manifests(
    group: ReadableGroup, session: SessionDep, pages: PaginationDep
) -> list[ManifestOut]:
    assert group.id is not None
    rows, total = await lifecycle.list_manifests(session, group.id, pages.window)
    pages.publish(total)
    return [ManifestOut.of(row) for row in rows]


@router.get("/groups/{group_id}/dependency_proxy/blobs", summary="Cached blobs")
async def list_blobs(
    group: ReadableGroup, session: SessionDep, pages: PaginationDep
) -> list[BlobOut]:
    assert group.id is not None
    rows, total = await lifecycle.list_blobs(session, group.id, pages.window)
    pages.publish(total)
    return [BlobOut.of(row) for row in rows]


@router.get("/groups/{group_id}/dependency_proxy/image_ttl_policy", summary="Image TTL policy")
async def get_ttl_policy(group: ReadableGroup, session: SessionDep) -> TtlPolicy:
    assert group.id is not None
    return TtlPolicy.of(await lifecycle.ttl_policy(session, group.id))


@router.put(
    "/groups/{group_id}/dependency_proxy/image_ttl_policy", summary="Change the image TTL policy"
)
async def put_ttl_policy(
    group: OwnedGroup, body: TtlPolicyUpdate, session: SessionDep
) -> TtlPolicy:
    """Only the fields given change, like GitLab's `updateDependencyProxyImageTtlGroupPolicy`."""
    assert group.id is not None
    current = await lifecycle.ttl_policy(session, group.id)
    policy = await lifecycle.set_ttl_policy(
        session,
        group.id,
        enabled=current.enabled if body.enabled is None else body.enabled,
        ttl=current.ttl if body.ttl is None else body.ttl,
    )
    return TtlPolicy.of(policy)
