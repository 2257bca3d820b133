"""A real upstream registry for the tests: CNCF distribution 2.8 (`docker-registry`).

It runs as a child process on 127.0.0.1 with filesystem storage under a directory the test
owns.  Its access log (gorilla's combined log format, one line per request, written to
stdout) goes to `access.log`, which this module parses so tests can count exactly what the
proxy asked the upstream for.  Application logs (stderr) go to `registry.log`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.images import Image
from tests.support.regclient import RegistryClient
from tests.support.token_server import TokenServer

REGISTRY_BIN = os.environ.get("DPROXY_TEST_REGISTRY_BIN", "/usr/bin/docker-registry")

# 127.0.0.1 - - [03/Dec/2026:17:09:12 +0000] "HEAD /v2/x/manifests/y HTTP/1.1" 404 91 "" "a\"b"
# gorilla/handlers escapes '"' and '\' inside the quoted fields, hence the (?:\\.|[^"\\]) runs.
_COMBINED = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>(?:\\.|[^"\\])*)" "(?P<agent>(?:\\.|[^"\\])*)")?'
)


@dataclass(frozen=True)
class LogEntry:
    """One request the upstream served, from its access log."""

    method: str
    path: str  # request URI as sent, query string included
    status: int
    size: int  # response body bytes actually written
    user_agent: str
    remote: str
    time: str  # as logged, e.g. "03/Dec/2026:17:09:12 +0000"
    offset: int  # byte offset of the line in access.log (a mark() value)

    @property
    def is_blob(self) -> bool:
        return "/blobs/sha256:" in self.path and "/uploads/" not in self.path

    @property
    def is_manifest(self) -> bool:
        return "/manifests/" in self.path


def parse_access_line(line: str, offset: int = 0) -> LogEntry | None:
    m = _COMBINED.match(line)
    if m is None:
        return None
    size = m["size"]
    return LogEntry(
        method=m["method"],
        path=m["uri"],
        status=int(m["status"]),
        size=0 if size == "-" else int(size),
        user_agent=(m["agent"] or "").replace('\\"', '"'),
        remote=m["remote"],
        time=m["time"],
        offset=offset,
    )


class _PortTaken(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class UpstreamRegistry:
    """A docker-registry process.  `root` holds config, logs and storage (`root/data`).

    The port is chosen once, so stop()/start() come back on the same port and storage.
    With `token_auth`, the registry demands Docker Hub-style bearer tokens from that server;
    push() then logs in to the token server with `push_credentials` (default: its first
    admin), which shows up in the token server's stats (reset_stats() after seeding).
    """

    def __init__(
        self,
        root: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        token_auth: TokenServer | None = None,
        push_credentials: tuple[str, str] | None = None,
        read_only: bool = False,
        storage_root: Path | str | None = None,
        log_level: str = "info",
        binary: str = REGISTRY_BIN,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self._fixed_port = port is not None
        self._started_once = False
        self.token_auth = token_auth
        self.read_only = read_only
        # Two registries may share one storage (e.g. an open and a token-auth front).
        self.storage_root = Path(storage_root) if storage_root else self.root / "data"
        self.storage_root.mkdir(parents=True, exist_ok=True)
        self.log_level = log_level
        self.binary = binary
        self.config_path = self.root / "config.yml"
        self.access_log = self.root / "access.log"
        self.app_log = self.root / "registry.log"
        self.access_log.touch()
        self._mark = self.access_log.stat().st_size
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False
        if push_credentials is None and token_auth is not None and token_auth.admins:
            admin = sorted(token_auth.admins)[0]
            push_credentials = (admin, token_auth.users[admin])
        self.push_credentials = push_credentials

    # ---- addresses ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """127.0.0.1:PORT, for docker:// references."""
        return f"{self.host}:{self.port}"

    def client(self, credentials: tuple[str, str] | None = None) -> RegistryClient:
        return RegistryClient(self.url, credentials)

    # ---- lifecycle ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {
                "level": self.log_level,
                "formatter": "text",
                "accesslog": {"disabled": False},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_root)},
                "delete": {"enabled": True},
                # No blob descriptor cache: what is on disk is the truth, so a test that
                # corrupts or removes a blob file sees the effect at once.
                "maintenance": {
                    "uploadpurging": {"enabled": False},
                    "readonly": {"enabled": self.read_only},
                },
            },
            "http": {
                "addr": f"{self.host}:{self.port}",
                # fixed secret: upload URLs stay valid across a stop()/start()
                "secret": "dproxy-test-upstream-secret",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.token_auth is not None:
            cfg["auth"] = self.token_auth.registry_auth_config()
        return cfg

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> UpstreamRegistry:
        if self.running:
            return self
        for _ in range(3):
            try:
                self._spawn_and_wait(timeout)
                self._started_once = True
                return self
            except _PortTaken:
                # free_port() is racy with other test processes: only a port we picked
                # ourselves and never served on may be swapped for a new one.
                if self._fixed_port or self._started_once:
                    raise
                self.port = free_port(self.host)
        raise RuntimeError(f"docker-registry: no free port after 3 tries:\n{self.log_tail()}")

    def _spawn_and_wait(self, timeout: float) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        # REGISTRY_* variables override the config file: keep the caller's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        log_start = self.app_log.stat().st_size if self.app_log.exists() else 0
        with self.access_log.open("ab") as out, self.app_log.open("ab") as err:
            self._proc = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach it first
            )
        if not self._atexit_registered:
            # a test run that dies without its fixture teardown must not leave registries
            atexit.register(self.stop)
            self._atexit_registered = True
        self._wait_ready(timeout, log_start)

    def _new_log(self, since: int) -> str:
        with self.app_log.open("rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", "replace")

    def _wait_ready(self, timeout: float, log_start: int) -> None:
        """Ready = our process logged "listening on ADDR" *and* GET /v2/ answers.  The log
        line matters: another process holding the port would answer the probe too."""
        deadline = time.monotonic() + timeout
        listening = f"listening on {self.host}:{self.port}"
        while True:
            log = self._new_log(log_start)
            if self._proc is not None and self._proc.poll() is not None:
                self._proc = None
                if "address already in use" in log:
                    raise _PortTaken(self.port)
                raise RuntimeError(f"docker-registry exited:\n{self.log_tail()}")
            if listening in log and self._probe():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"docker-registry not ready on {self.url}:\n{self.log_tail()}")
            time.sleep(0.02)

    def _probe(self) -> bool:
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
            try:
                conn.request("GET", "/v2/")
                conn.getresponse().read()  # 200, or 401 with token auth: either means "up"
            finally:
                conn.close()
            return True
        except OSError:
            return False

    def stop(self, graceful: bool = False, timeout: float = 10.0) -> None:
        """Stop the process.  Default is SIGKILL: distribution 2.8 needs ~2 s for SIGTERM,
        and a sudden death is the outage the tests simulate anyway."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> UpstreamRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.app_log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # ---- content -----------------------------------------------------------------------
    def push(self, image: Image, repository: str, tag: str | None = None) -> None:
        """Push blobs, child manifests (by digest), then the manifest under `tag` (or its
        digest) through the HTTP API, so the stored bytes are exactly the builder's.
        These requests land in the access log: call reset_log() afterwards."""
        self.client(self.push_credentials).push_image(image, repository, tag)

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.client(self.push_credentials).delete_manifest(repository, digest)

    def blob_data_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage_root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    @contextlib.contextmanager
    def hide_blob(self, digest: str) -> Iterator[Path]:
        """Move the stored blob away (the registry then answers 404 BLOB_UNKNOWN for it,
        while manifests still reference it) and put it back on exit."""
        path = self.blob_data_path(digest)
        aside = path.with_name("data.dproxy-test-hidden")
        os.replace(path, aside)
        try:
            yield path
        finally:
            os.replace(aside, path)

    @contextlib.contextmanager
    def corrupt_blob(self, digest: str, offset: int | None = None) -> Iterator[Path]:
        """Flip bytes of the stored blob in place (same size, so Content-Length still
        matches and only a digest check can notice), and restore it on exit."""
        path = self.blob_data_path(digest)
        backup = path.with_name("data.dproxy-test-backup")
        shutil.copy2(path, backup)
        try:
            size = path.stat().st_size
            at = size // 2 if offset is None else offset
            with path.open("r+b") as fh:
                fh.seek(at)
                old = fh.read(16)
                fh.seek(at)
                fh.write(bytes(b ^ 0xFF for b in old))
            yield path
        finally:
            os.replace(backup, path)

    # ---- request log -------------------------------------------------------------------
    def mark(self) -> int:
        """Current end of the access log; pass it to requests()/count() as `since`."""
        return self.access_log.stat().st_size

    def reset_log(self) -> None:
        """Make requests()/count() without `since` start from now."""
        self._mark = self.mark()

    def _quiet_waits(self, quiet: float, timeout: float) -> Iterator[float]:
        """Sleep durations to wait through until the access log has been still for `quiet`
        seconds (or `timeout` passed); shared by the sync and the async waiter."""
        deadline = time.monotonic() + timeout
        size = self.mark()
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            yield min(0.02, quiet)
            now_size = self.mark()
            if now_size != size:
                size, still_since = now_size, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                return

    def wait_quiet(self, quiet: float = 0.1, timeout: float = 10.0) -> None:
        """Wait until the access log has not grown for `quiet` seconds.  Needed because the
        registry logs a request after sending the response, and a proxy may still be
        fetching in the background after its client is done."""
        for delay in self._quiet_waits(quiet, timeout):
            time.sleep(delay)

    async def settle(self, quiet: float = 0.1, timeout: float = 10.0) -> None:
        """wait_quiet() for async tests: it sleeps with asyncio, so a proxy running in the
        same event loop keeps working meanwhile.  Then read with `settle=0`."""
        for delay in self._quiet_waits(quiet, timeout):
            await asyncio.sleep(delay)

    def requests(self, since: int | None = None, settle: float = 0.1) -> list[LogEntry]:
        """Requests logged since `since` (default: the last reset_log()), oldest first.
        `settle` > 0 first waits that long for the log to go quiet."""
        if settle > 0:
            self.wait_quiet(settle)
        start = self._mark if since is None else since
        out: list[LogEntry] = []
        with self.access_log.open("rb") as fh:
            fh.seek(start)
            offset = start
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a line still being written
                entry = parse_access_line(raw.decode("utf-8", "replace"), offset)
                if entry is not None:
                    out.append(entry)
                offset += len(raw)
        return out

    def count(
        self,
        method: str | None = None,
        path_contains: str = "",
        status: int | None = None,
        since: int | None = None,
        settle: float = 0.1,
    ) -> int:
        """Number of logged requests matching all the given filters."""
        return sum(
            1
            for e in self.requests(since, settle)
            if (method is None or e.method == method)
            and path_contains in e.path
            and (status is None or e.status == status)
        )

    def blob_gets(self, since: int | None = None, settle: float = 0.1) -> dict[str, int]:
        """digest -> number of GETs of that blob (any status)."""
        counts: dict[str, int] = {}
        for e in self.requests(since, settle):
            if e.method == "GET" and e.is_blob:
                digest = e.path.rsplit("/", 1)[1].split("?", 1)[0]
                counts[digest] = counts.get(digest, 0) + 1
        return counts
