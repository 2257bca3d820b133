"""Manifest media types that dproxy stores and serves byte for byte."""

from __future__ import annotations

import json

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"

MANIFEST_TYPES: tuple[str, ...] = (
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    OCI_ARTIFACT,
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

# Sent upstream on every manifest request. Listing every type keeps a registry from
# down-converting a multi-arch tag to one platform (GitLab's `exec format error` bug).
UPSTREAM_ACCEPT = ", ".join(MANIFEST_TYPES)

OCTET_STREAM = "application/octet-stream"


def normalize(content_type: str | None) -> str:
    """Strip parameters (`; charset=utf-8`) that some registries add to the media type."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def sniff(body: bytes) -> str | None:
    """The media type a manifest declares in its own `mediaType` field, if any."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared in MANIFEST_TYPES:
        return declared
    if isinstance(doc.get("manifests"), list):
        return OCI_INDEX
    if isinstance(doc.get("layers"), list):
        return OCI_MANIFEST
    return None


def accepted_by(media_type: str, accept_header: str | None) -> bool:
    """Whether a client's `Accept` admits a stored manifest.

    A client that sends no Accept, a wildcard, or any manifest type we serve gets the stored
    manifest as is: dproxy never rewrites a manifest, so the only choice is serve or 404.
    """
    if not accept_header:
        return True
    accepted = {normalize(part) for part in accept_header.split(",")}
    if "*/*" in accepted or media_type in accepted:
        return True
    # A client that names no manifest type at all (only `application/json`, say) gets the
    # manifest; one that names some, but not this one, gets the 404 upstream would give.
    return not accepted & set(MANIFEST_TYPES)
