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
from collections.abc import Mapping
from pathlib import Path

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
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.split = split
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
        self.group_ids: dict[str, int] = {}
        self.logs = data_dir / "logs"

    # -- processes ------------------------------------------------------------------------

    def start(self) -> DproxyServer:
        self.logs.mkdir(parents=True, exist_ok=True)
        if not self.split:
            self._spawn("all", ["serve"], self.env, self.port)
            return self
        self.cli("migrate")
        ports = {name: free_port() for name in ("auth", "fetcher")}
        auth_url = f"http://127.0.0.1:{ports['auth']}"
        fetcher_url = f"http://127.0.0.1:{ports['fetcher']}"
        # Production puts one ingress in front (`/v2` → registry, `/jwt` → auth). Here the
        # token realm simply points at the auth service's own port, as Docker Hub's realm
        # points at another host.
        common = {
            **self.env,
            "DPROXY_AUTH_URL": auth_url,
            "DPROXY_FETCHER_URL": fetcher_url,
            "DPROXY_EXTERNAL_URL": auth_url,
        }
        self._spawn(
            "auth",
            ["serve", "--service", "auth"],
            {**common, "DPROXY_LISTEN": f"127.0.0.1:{ports['auth']}"},
            ports["auth"],
        )
        self._spawn(
            "fetcher",
            ["serve", "--service", "fetcher"],
            {**common, "DPROXY_LISTEN": f"127.0.0.1:{ports['fetcher']}"},
            ports["fetcher"],
        )
        self._spawn("registry", ["serve", "--service", "registry"], common, self.port)
        # Clients reach the token endpoint at the external URL; in split mode that is the
        # registry's port, so tests ask the auth service directly through `auth_url`.
        self.auth_url = auth_url
        return self

    auth_url: str = ""

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str], port: int) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen([DPROXY, *args], env=dict(env), stdout=log, stderr=log)
        self._processes[name] = process
        deadline = time.monotonic() + 30
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

    def stop(self) -> None:
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

    def api(self, method: str, path: str, body: Mapping[str, object] | None = None) -> object:
        if not self._root_token:
            self._root_token = self.cli(
                "tokens", "create", "--user", "root", "--name", "tests", "--scope", "api"
            )
        base = self.auth_url or self.url
        request = urllib.request.Request(
            f"{base}/api/v4{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"PRIVATE-TOKEN": self._root_token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

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

    def image(self, group: str, image: str) -> str:
        """The `host:port/...` reference prefix skopeo pulls, e.g. for `grp` and `alpine:1`."""
        return f"{self.address}/{group}/dependency_proxy/containers/{image}"

    def registry_token(self, username: str, password: str, *scopes: str) -> str:
        query = "&".join(["service=dependency_proxy", *(f"scope={s}" for s in scopes)])
        base = self.auth_url or self.url
        request = urllib.request.Request(f"{base}/jwt/auth?{query}")
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(request, timeout=10) as response:
            token: str = json.load(response)["token"]
        return token
