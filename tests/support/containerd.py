"""A private containerd for the tests: its own root, state and socket, never the system's.

The CRI plugin is disabled (no kubelet here, and it would set up CNI) and the debug and metrics
listeners are off, so the daemon opens no TCP port; `ctr` talks to it over a unix socket.
Everything it writes stays under the directories given, `/opt/containerd` included (the `opt`
plugin's default).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CONTAINERD_BIN = os.environ.get("DPROXY_TEST_CONTAINERD_BIN", shutil.which("containerd") or "")
CTR_BIN = os.environ.get("DPROXY_TEST_CTR_BIN", shutil.which("ctr") or "")

_running: set[Containerd] = set()


class Containerd:
    def __init__(self, root: Path) -> None:
        self.root = root
        # A unix socket path may not exceed 108 bytes and pytest's tmp_path can be long: the
        # socket and the state (shim sockets live there too) get a short directory of their own.
        self._short = Path(tempfile.mkdtemp(prefix="dproxy-ctd-"))
        self.address = str(self._short / "containerd.sock")
        self.config_path = root / "config.toml"
        self.log_path = root / "containerd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        return f"""\
version = 2
root = "{self.root / "root"}"
state = "{self._short / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{self.address}"

[ttrpc]
  address = "{self.address}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / "opt"}"
"""

    def start(self, timeout: float = 30.0) -> Containerd:
        if not CONTAINERD_BIN or not CTR_BIN:
            raise RuntimeError("containerd/ctr not found: `make tools` installs Debian containerd")
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self._process = subprocess.Popen(
            [CONTAINERD_BIN, "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C of pytest must not skip our own SIGTERM
        )
        _running.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"containerd exited: {self.log()[-3000:]}")
            if self.ctr("version", timeout=5, check=False).returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"containerd did not answer within {timeout} s: {self.log()[-3000:]}")

    def ctr(
        self, *args: str, namespace: str = "default", timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ctr -a SOCKET -n NAMESPACE ARGS…`, bounded by `timeout`."""
        result = subprocess.run(
            [CTR_BIN, "-a", self.address, "-n", namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"ctr {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        _running.discard(self)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        shutil.rmtree(self._short, ignore_errors=True)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    """If a fixture's teardown never ran, the daemon still goes with the interpreter."""
    for daemon in list(_running):
        with contextlib.suppress(Exception):
            daemon.stop(timeout=5)
