"""Content-addressed blob storage: one object per digest, shared by every group."""

from dproxy_shared.storage.base import (
    BlobNotFound,
    BlobStore,
    BlobWriter,
    DigestMismatch,
    blob_key,
)
from dproxy_shared.storage.factory import open_blob_store

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobWriter",
    "DigestMismatch",
    "blob_key",
    "open_blob_store",
]
