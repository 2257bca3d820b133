"""Image references in dproxy's URL space.

    /v2/<group path>/dependency_proxy/containers/<image>/manifests/<tag or digest>
    /v2/<group path>/dependency_proxy/containers/<image>/blobs/<digest>

Everything is validated against a grammar before it is used, so that `..`, encoded slashes
and other oddities are refused here and never reach the database or storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.errors import ErrorCode, RegistryError

PROXY_INFIX = "dependency_proxy/containers"
MAX_IMAGE_SEGMENTS = 5

# OCI distribution-spec name component.
_IMAGE_SEGMENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
# GitLab namespace path: letters, digits, `_`, `-`, `.`; not starting with `-` or `.`.
_GROUP_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# Characters that never belong in a decoded path: their presence means an encoded trick.
_FORBIDDEN = re.compile(r"[\\%\x00-\x20\x7f]")

Kind = Literal["manifests", "blobs"]


def group_segment_valid(segment: str) -> bool:
    return bool(_GROUP_SEGMENT.fullmatch(segment)) and ".." not in segment


@dataclass(frozen=True, slots=True)
class ImageName:
    """`<group path>/dependency_proxy/containers/<image>` split and validated."""

    group_path: str  # lowercased: GitLab paths are case-insensitive
    image: str  # as the client wrote it, e.g. `alpine`

    @property
    def upstream_repository(self) -> str:
        """Docker Hub keeps official images under `library/`."""
        return self.image if "/" in self.image else f"library/{self.image}"

    @property
    def repository(self) -> str:
        """The full repository name, as it appears in token scopes."""
        return f"{self.group_path}/{PROXY_INFIX}/{self.image}"

    @classmethod
    def parse(cls, name: str) -> ImageName:
        marker = f"/{PROXY_INFIX}/"
        group_path, sep, image = name.partition(marker)
        if not sep:
            raise RegistryError(
                ErrorCode.NAME_UNKNOWN,
                f"repository name must look like <group>/{PROXY_INFIX}/<image>",
                detail={"name": name[:255]},
            )
        group_segments = group_path.split("/")
        image_segments = image.split("/")
        if (
            _FORBIDDEN.search(name)
            or not all(group_segment_valid(s) for s in group_segments)
            or not 1 <= len(image_segments) <= MAX_IMAGE_SEGMENTS
            or not all(_IMAGE_SEGMENT.fullmatch(s) for s in image_segments)
        ):
            raise RegistryError(
                ErrorCode.NAME_INVALID, "invalid repository name", detail={"name": name[:255]}
            )
        return cls(group_path.lower(), image)


@dataclass(frozen=True, slots=True)
class Reference:
    """A tag or a digest."""

    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        return str(self.digest) if self.digest else str(self.tag)

    @classmethod
    def parse(cls, value: str) -> Reference:
        if Digest.is_digest(value):
            return cls(digest=Digest.parse(value))
        if not _TAG.fullmatch(value):
            # 404 rather than 400: the OCI conformance suite expects an unknown manifest.
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, "invalid tag", detail={"tag": value[:160]}
            )
        return cls(tag=value)


@dataclass(frozen=True, slots=True)
class RegistryPath:
    name: ImageName
    kind: Kind
    reference: Reference


def parse_registry_path(path: str) -> RegistryPath:
    """Parse what follows `/v2/` (already percent-decoded; the caller refuses raw `%2F`)."""
    name, kind, ref = _split(path)
    image_name = ImageName.parse(name)
    if kind == "blobs":
        return RegistryPath(image_name, kind, Reference(digest=Digest.parse(ref)))
    return RegistryPath(image_name, kind, Reference.parse(ref))


def _split(path: str) -> tuple[str, Kind, str]:
    for kind in ("manifests", "blobs"):
        name, sep, ref = path.rpartition(f"/{kind}/")
        if sep and name and ref and "/" not in ref:
            return name, kind, ref
    raise RegistryError(
        ErrorCode.NAME_UNKNOWN, "unknown registry path", detail={"path": path[:255]}
    )


_SCOPE = re.compile(r"repository:([^:]+):([a-z*,]+)")


@dataclass(frozen=True, slots=True)
class Scope:
    """A Docker token scope such as `repository:grp/dependency_proxy/containers/alpine:pull`."""

    repository: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, value: str) -> Scope | None:
        match = _SCOPE.fullmatch(value)
        if not match:
            return None
        return cls(match.group(1), tuple(a for a in match.group(2).split(",") if a))

    def __str__(self) -> str:
        return f"repository:{self.repository}:{','.join(self.actions)}"
