"""podman as a client: root on private storage, pull only."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Podman:
    """podman as root on private storage (vfs: no overlay mounts to clean up); pull only."""

    root: Path  # storage, and the working directory
    run: Path  # podman refuses a runroot longer than 50 characters: a short one of its own

    def __call__(self, *args: str, env: dict[str, str], timeout: float = 120.0) -> str:
        result = subprocess.run(
            [
                "podman",
                *("--root", str(self.root / "storage"), "--runroot", str(self.run / "run")),
                *("--tmpdir", str(self.run / "tmp"), "--storage-driver", "vfs"),
                *("--events-backend", "file", "--cgroup-manager", "cgroupfs"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.root,
            check=False,
        )
        assert result.returncode == 0, f"podman {' '.join(args)} failed:\n{result.stderr}"
        return result.stdout


@contextmanager
def private_podman(workdir: Path) -> Iterator[Podman]:
    run = Path(tempfile.mkdtemp(prefix="dproxy-pm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        yield Podman(workdir, run)
    finally:
        shutil.rmtree(run, ignore_errors=True)
