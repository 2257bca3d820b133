"""Run dproxy as real processes for end-to-end tests: `dproxy serve` (embedded default) or the
three services split, each on its own port."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from minio import Minio
from minio.error import S3Error

from tests.support.front import RoundRobinFront
from tests.support.upstream import free_port

ROOT_PASSWORD = "root-password-for-tests"
DPROXY = shutil.which("dproxy") or str(Path(sys.executable).with_name("dproxy"))


class DproxyServer:
    """One dproxy installation: a data dir, and one process (embedded) or three (split)."""

    def __init__(
        self,
        data_dir: Path,
        upstream_url: str,
        *,
        split: bool = False,
        replicas: int = 1,
        migrated: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.migrated = migrated  # split mode: the database already has the schema
        self.data_dir = data_dir
        self.split = split or replicas > 1
        self.replicas = replicas
        self.front: RoundRobinFront | None = None
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.env = {
            **os.environ,
            "DPROXY_DATA_DIR": str(data_dir),
            "DPROXY_LISTEN": self.address,
            "DPROXY_EXTERNAL_URL": self.url,
            "DPROXY_UPSTREAM_URL": upstream_url,
            "DPROXY_ROOT_PASSWORD": ROOT_PASSWORD,
            "DPROXY_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.user_ids: dict[str, int] = {}
        self.on_stop: list[Callable[[], object]] = []
        self.group_ids: dict[str, int] = {}
        self.service_ports: dict[str, int] = {}  # split mode: each service's own port
        self.logs = data_dir / "logs"

    # -- processes ------------------------------------------------------------------------

    def start(self) -> DproxyServer:
        self.logs.mkdir(parents=True, exist_ok=True)
        if not self.split:
            self._spawn("all", ["serve"], self.env)
            self._wait_live("all", self.port)
            return self
        if not self.migrated:
            self.cli("migrate")
        auth_port = free_port()
        auth_url = f"http://127.0.0.1:{auth_port}"
        # Production puts one ingress in front (`/v2` → registry, `/jwt` → auth). Here the
        # token realm simply points at the auth service's own port, as Docker Hub's realm
        # points at another host.
        common = {**self.env, "DPROXY_AUTH_URL": auth_url, "DPROXY_EXTERNAL_URL": auth_url}
        # Started together: each spends most of its start-up importing Python modules.
        self._spawn(
            "auth",
            ["serve", "--service", "auth"],
            {**common, "DPROXY_LISTEN": f"127.0.0.1:{auth_port}"},
        )
        # Registry i talks to fetcher i; with several, a round-robin front spreads clients.
        registry_ports = (
            [self.port] if self.replicas == 1 else [free_port() for _ in range(self.replicas)]
        )
        live = [("auth", auth_port)]
        for i, registry_port in enumerate(registry_ports):
            fetcher_port = free_port()
            fetcher_url = f"http://127.0.0.1:{fetcher_port}"
            suffix = "" if self.replicas == 1 else f"-{i}"
            self._spawn(
                f"fetcher{suffix}",
                ["serve", "--service", "fetcher"],
                {**common, "DPROXY_LISTEN": f"127.0.0.1:{fetcher_port}"},
            )
            self._spawn(
                f"registry{suffix}",
                ["serve", "--service", "registry"],
                {
                    **common,
                    "DPROXY_FETCHER_URL": fetcher_url,
                    "DPROXY_LISTEN": f"127.0.0.1:{registry_port}",
                },
            )
            live += [(f"fetcher{suffix}", fetcher_port), (f"registry{suffix}", registry_port)]
        # Root's API token is made meanwhile: the CLI is another Python start-up.
        self._token_cli = subprocess.Popen(
            [DPROXY, "tokens", "create", "--user", "root", "--name", "tests", "--scope", "api"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, port in live:
            self._wait_live(name, port)
        if self.replicas > 1:
            self.front = RoundRobinFront(registry_ports, port=self.port).start()
        self.registry_ports = registry_ports
        self.auth_url = auth_url
        self.service_ports = dict(live)
        return self

    auth_url: str = ""

    def metrics(self, service: str = "fetcher") -> str:
        """The Prometheus text of one service (of the one process, embedded)."""
        port = self.service_ports.get(service, self.port)
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    @property
    def token_url(self) -> str:
        """Where clients get registry tokens (the auth service's port in split mode)."""
        return f"{self.auth_url or self.url}/jwt/auth"

    @property
    def api_url(self) -> str:
        return f"{self.auth_url or self.url}/api/v4"

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self._processes[name] = subprocess.Popen(
            [DPROXY, *args], env=dict(env), stdout=log, stderr=log
        )

    def _wait_live(self, name: str, port: int) -> None:
        process = self._processes[name]
        # Generous: several Python services may be starting at once on a 2-CPU machine.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"dproxy {name} exited: {self.log(name)[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/liveness", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise RuntimeError(f"dproxy {name} did not start: {self.log(name)[-2000:]}")

    def log(self, name: str = "all") -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pid(self, name: str) -> int:
        return self._processes[name].pid

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
            self.front = None
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        while self.on_stop:
            self.on_stop.pop()()

    def __enter__(self) -> DproxyServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- administration -------------------------------------------------------------------

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [DPROXY, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"dproxy {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip()

    # Setup goes through the management API (one CLI call for root's token): a CLI call
    # per step would cost a Python start-up each.

    _root_token: str = ""
    _token_cli: subprocess.Popen[str] | None = None

    @property
    def root_token(self) -> str:
        """A personal access token of `root` with the `api` scope."""
        if not self._root_token and self._token_cli is not None:
            out, err = self._token_cli.communicate(timeout=60)
            if self._token_cli.returncode != 0:
                raise RuntimeError(f"dproxy tokens create failed: {err}")
            self._root_token = out.strip()
        if not self._root_token:
            self._root_token = self.cli(
                "tokens", "create", "--user", "root", "--name", "tests", "--scope", "api"
            )
        return self._root_token

    def api(self, method: str, path: str, body: Mapping[str, object] | None = None) -> object:
        base = self.auth_url or self.url
        request = urllib.request.Request(
            f"{base}/api/v4{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"PRIVATE-TOKEN": self.root_token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return json.loads(data) if data else None

    def add_user(self, username: str, password: str) -> int:
        user = self.api("POST", "/users", {"username": username, "password": password})
        assert isinstance(user, dict)
        self.user_ids[username] = int(user["id"])
        return self.user_ids[username]

    def add_group(self, path: str) -> int:
        parent_path, _, name = path.rpartition("/")
        body: dict[str, object] = {"name": name, "path": name}
        if parent_path:
            body["parent_id"] = self.group_ids[parent_path]
        group = self.api("POST", "/groups", body)
        assert isinstance(group, dict)
        self.group_ids[path] = int(group["id"])
        return self.group_ids[path]

    def add_member(self, group: str, user: str, level: int = 10) -> None:
        self.api(
            "POST",
            f"/groups/{self.group_ids[group]}/members",
            {"user_id": self.user_ids[user], "access_level": level},
        )

    # -- storage --------------------------------------------------------------------------

    def stored_blob(self, digest: str) -> bytes | None:
        """The object stored under `digest`, wherever this dproxy keeps blobs."""
        algorithm, _, hex_digest = digest.partition(":")
        key = f"blobs/{algorithm}/{hex_digest[:2]}/{hex_digest}"
        storage = self.env.get("DPROXY_STORAGE_URL", "")
        if not storage.startswith("s3://"):
            path = self.data_dir / "storage" / key
            return path.read_bytes() if path.exists() else None
        bucket, _, prefix = storage.removeprefix("s3://").partition("/")
        try:
            response = self._s3().get_object(bucket, f"{prefix}/{key}" if prefix else key)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def stored_digests(self) -> set[str]:
        """Every digest with an object in storage."""
        storage = self.env.get("DPROXY_STORAGE_URL", "")
        if not storage.startswith("s3://"):
            root = self.data_dir / "storage" / "blobs"
            return {f"{p.parent.parent.name}:{p.name}" for p in root.glob("*/*/*")}
        bucket, _, prefix = storage.removeprefix("s3://").partition("/")
        names = self._s3().list_objects(bucket, prefix=f"{prefix}/blobs/", recursive=True)
        return {
            f"{parts[-3]}:{parts[-1]}" for parts in (str(o.object_name).split("/") for o in names)
        }

    def _s3(self) -> Minio:
        url = urlsplit(self.env["DPROXY_S3_ENDPOINT"])
        return Minio(
            url.netloc,
            access_key=self.env["DPROXY_S3_ACCESS_KEY"],
            secret_key=self.env["DPROXY_S3_SECRET_KEY"],
            secure=url.scheme == "https",
        )

    def image(self, group: str, image: str) -> str:
        """The `host:port/...` reference prefix skopeo pulls, e.g. for `grp` and `alpine:1`."""
        return f"{self.address}/{group}/dependency_proxy/containers/{image}"

    def registry_token(self, username: str, password: str, *scopes: str) -> str:
        query = "&".join(["service=dependency_proxy", *(f"scope={s}" for s in scopes)])
        request = urllib.request.Request(f"{self.token_url}?{query}")
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(request, timeout=10) as response:
            token: str = json.load(response)["token"]
        return token
