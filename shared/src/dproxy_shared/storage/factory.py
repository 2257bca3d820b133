"""Pick the blob store from `DPROXY_STORAGE_URL`: `file:///path` or `s3://bucket[/prefix]`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from dproxy_shared.settings import Settings
from dproxy_shared.storage.base import BlobStore
from dproxy_shared.storage.local import LocalBlobStore
from dproxy_shared.storage.s3 import S3BlobStore


def open_blob_store(settings: Settings) -> BlobStore:
    url = urlparse(settings.storage_url)
    if url.scheme == "file":
        return LocalBlobStore(Path(unquote(url.path)))
    if url.scheme == "s3":
        if not url.netloc:
            raise ValueError("DPROXY_STORAGE_URL s3:// needs a bucket: s3://bucket[/prefix]")
        endpoint, secure = parse_endpoint(settings.s3_endpoint, "DPROXY_S3_ENDPOINT")
        public, public_secure = (
            parse_endpoint(settings.s3_public_endpoint, "DPROXY_S3_PUBLIC_ENDPOINT")
            if settings.s3_public_endpoint
            else (None, None)
        )
        return S3BlobStore(
            endpoint,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            url.netloc,
            secure=secure,
            prefix=unquote(url.path),
            spool_dir=settings.spool_dir,
            region=settings.s3_region or None,
            public_endpoint=public,
            public_secure=public_secure,
        )
    raise ValueError(f"unsupported DPROXY_STORAGE_URL scheme {url.scheme!r} (use file:// or s3://)")


def parse_endpoint(value: str, name: str) -> tuple[str, bool]:
    """`http://host:port` or `https://host[:port]` as the SDK wants it: (`host:port`, secure)."""
    url = urlparse(value)
    if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
        raise ValueError(f"{name} must be http://host:port or https://host[:port], not {value!r}")
    return url.netloc, url.scheme == "https"
