"""Pick the blob store from `DPROXY_STORAGE_URL`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from dproxy_shared.settings import Settings
from dproxy_shared.storage.base import BlobStore
from dproxy_shared.storage.local import LocalBlobStore


def open_blob_store(settings: Settings) -> BlobStore:
    url = urlparse(settings.storage_url)
    if url.scheme == "file":
        return LocalBlobStore(Path(unquote(url.path)))
    raise ValueError(
        f"unsupported DPROXY_STORAGE_URL scheme {url.scheme!r} (this build supports file://)"
    )
