"""Test support for dproxy's end-to-end tests (see README.md beside this file).

    images.py        ImageBuilder(cache_dir, seed, gzip_level) -> Image / Blob / Platform
    upstream.py      UpstreamRegistry(root, token_auth=..., ...): a real docker-registry 2.8
                     with push(), stop()/start(), access-log counting and blob fault helpers
    token_server.py  TokenServer(workdir, ...): auth.docker.io stand-in (RS256 JWTs), stats()
    regclient.py     RegistryClient(base_url, credentials): small sync v2 client + token dance
    skopeo.py        inspect_raw(ref), copy_to_dir(ref, dest, override_arch=...): the real client

Needs the Debian packages docker-registry and skopeo (podman/containerd optional).
"""

from tests.support.images import (
    ALL_MANIFEST_TYPES,
    AMD64,
    ARM64,
    DEFAULT_CACHE_DIR,
    LARGE_LAYER_SIZES,
    Blob,
    Image,
    ImageBuilder,
    ImageSpec,
    MiB,
    Platform,
)
from tests.support.regclient import RegistryClient, RegistryError, Response
from tests.support.token_server import TokenServer, TokenStats
from tests.support.upstream import LogEntry, UpstreamRegistry

__all__ = [
    "ALL_MANIFEST_TYPES",
    "AMD64",
    "ARM64",
    "DEFAULT_CACHE_DIR",
    "LARGE_LAYER_SIZES",
    "Blob",
    "Image",
    "ImageBuilder",
    "ImageSpec",
    "LogEntry",
    "MiB",
    "Platform",
    "RegistryClient",
    "RegistryError",
    "Response",
    "TokenServer",
    "TokenStats",
    "UpstreamRegistry",
]
