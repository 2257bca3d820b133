"""Configuration: every knob is a `DPROXY_*` environment variable (SPEC §9).

Settings are built by the caller (the CLI, a test) and passed down; nothing reads the
environment at import time, so tests can build as many differently configured apps as they like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ServiceName = Literal["auth", "registry", "fetcher"]
DOCKER_HUB = "https://registry-1.docker.io"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DPROXY_", extra="ignore")

    listen: str = Field("127.0.0.1:5000", description="host:port to bind")
    external_url: str = Field("", description="Base URL clients use; defaults to http://LISTEN")
    data_dir: Path = Field(Path("data"), description="Embedded default's files")
    database_url: str = Field("", description="Defaults to SQLite in DATA_DIR")
    redis_url: str = Field("", description="Empty: in-process cache, locks and notifications")
    storage_url: str = Field("", description="file:///path or s3://bucket; defaults to DATA_DIR")
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_region: str = ""
    s3_public_endpoint: str = Field(
        "", description="Endpoint clients reach for presigned URLs, when not DPROXY_S3_ENDPOINT"
    )
    storage_redirect: bool = Field(
        False, description="Redirect cached blob GETs to presigned storage URLs"
    )
    storage_redirect_expires: float = Field(
        600.0, gt=0, le=7 * 24 * 3600, description="Lifetime of a presigned blob URL (seconds)"
    )
    upstream_url: str = DOCKER_HUB
    upstream_username: str = ""
    upstream_password: SecretStr = SecretStr("")
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 30.0
    stale_if_missing: float = Field(
        0.0,
        ge=0,
        description="When upstream answers 404 for a cached tag: 0 keeps serving the cached "
        "copy (stale) forever; N > 0 stops serving it (404) once upstream last confirmed the "
        "tag more than N seconds ago",
    )
    negative_cache_seconds: float = Field(
        30.0, ge=0, description="How long an upstream 404 for a manifest is remembered; 0: never"
    )
    breaker_failures: int = Field(
        5,
        ge=1,
        description="Consecutive upstream failures (timeout, connection, 5xx) that "
        "open an upstream's circuit breaker",
    )
    breaker_cooldown: float = Field(
        30.0, gt=0, description="Seconds an open breaker refuses upstream calls before a probe"
    )
    ratelimit_reserve: int = Field(
        10,
        ge=0,
        description="Under this many upstream pulls left in the rate-limit window, "
        "cached tags are served without revalidation until the window resets",
    )
    root_password: SecretStr = SecretStr("")
    manifest_revalidate_after: float = Field(60.0, ge=0)
    manifest_max_bytes: int = 4 * 1024 * 1024
    fill_timeout: float = Field(3600.0, gt=0, description="Upper bound for one blob download")
    fill_lease_seconds: float = Field(
        30.0, ge=1, description="A fetch's lease; a crashed fetcher's lease frees itself then"
    )
    cleanup_interval: float = Field(
        60.0, gt=0, description="Seconds between runs of the cache cleanup (TTL, purge)"
    )
    cache_max_bytes: int = Field(
        0, ge=0, description="Evict least recently read objects above this size; 0 = no limit"
    )
    cleanup_read_grace: float = Field(
        600.0,
        ge=0,
        description="Seconds after its last read before a row marked for destruction is "
        "destroyed: a client may still be downloading its object",
    )
    cleanup_batch_size: int = Field(100, ge=1, description="Rows one cleanup pass claims")
    cleanup_concurrency: int = Field(4, ge=1, description="Digests deleted at the same time")
    db_pool_size: int = Field(5, ge=1, description="Database connections per process")
    auth_url: str = Field("", description="Split mode: internal base URL of the auth service")
    fetcher_url: str = Field("", description="Split mode: internal base URL of the fetcher")
    jwt_key_file: Path | None = Field(None, description="PEM EC P-256 key; generated if missing")
    jwt_issuer: str = "dproxy"
    encryption_key: SecretStr = Field(
        SecretStr(""),
        description="Fernet key (urlsafe base64, 32 bytes) encrypting secrets at rest, such as "
        "groups' upstream credentials; empty: a key file in DATA_DIR, generated on first use "
        "(split mode: set it, the same on auth and fetcher)",
    )
    auth_failure_limit: int = Field(30, ge=1, description="Failed logins that ban an address")
    auth_failure_window: float = Field(180.0, gt=0, description="Seconds failures are counted")
    auth_ban_seconds: float = Field(3600.0, gt=0, description="How long a ban lasts")
    actor_recheck_seconds: float = Field(
        5.0, ge=0, le=10, description="How long /v2 trusts a credential check"
    )
    log_level: str = "info"

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.external_url:
            self.external_url = f"http://{self.listen}"
        self.external_url = self.external_url.rstrip("/")
        self.upstream_url = self.upstream_url.rstrip("/")
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'dproxy.db'}"
        if not self.storage_url:
            self.storage_url = (self.data_dir / "storage").as_uri()
        if self.jwt_key_file is None:
            self.jwt_key_file = self.data_dir / "jwt-signing-key.pem"
        return self

    @property
    def listen_host(self) -> str:
        host, _, _ = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def spool_dir(self) -> Path:
        """Where in-flight downloads live; local even when storage is S3."""
        return self.data_dir / "spool"
