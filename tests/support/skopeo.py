"""Thin wrappers around the `skopeo` CLI (a real client: it does its own token dance).

skopeo 1.9 with --tls-verify=false tries HTTPS first and falls back to plain HTTP, which is
what the 127.0.0.1 registries and the proxy speak.  An empty auth file is passed so that
whatever credentials the machine has never leak into a test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SKOPEO_BIN = os.environ.get("DPROXY_TEST_SKOPEO_BIN", shutil.which("skopeo") or "/usr/bin/skopeo")


@dataclass(frozen=True)
class SkopeoResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _auth_file() -> str:
    path = Path(tempfile.gettempdir()) / "dproxy-test-skopeo-auth.json"
    if not path.exists():
        path.write_text("{}")
    return str(path)


def run_skopeo(args: list[str], timeout: float = 120.0) -> SkopeoResult:
    env = dict(os.environ, REGISTRY_AUTH_FILE=_auth_file())
    p = subprocess.run(
        [SKOPEO_BIN, *args], capture_output=True, timeout=timeout, env=env, check=False
    )
    return SkopeoResult(p.returncode, p.stdout, p.stderr.decode(errors="replace"))


def _creds(flag: str, creds: tuple[str, str] | None) -> list[str]:
    return [flag, f"{creds[0]}:{creds[1]}"] if creds else []


def inspect_raw(ref: str, creds: tuple[str, str] | None = None, check: bool = True) -> SkopeoResult:
    """`skopeo inspect --raw docker://REF`: stdout is the manifest bytes as served."""
    r = run_skopeo(
        ["inspect", "--raw", "--tls-verify=false", *_creds("--creds", creds), f"docker://{ref}"]
    )
    if check and not r.ok:
        raise AssertionError(f"skopeo inspect {ref} failed: {r.stderr}")
    return r


def copy_to_dir(
    ref: str,
    dest: Path | str,
    *,
    creds: tuple[str, str] | None = None,
    authfile: Path | None = None,
    override_arch: str | None = None,
    override_variant: str | None = None,
    all_platforms: bool = False,
    check: bool = True,
    timeout: float = 300.0,
) -> SkopeoResult:
    """Pull `docker://REF` into a `dir:` layout (manifest.json + blobs named by hex digest).
    skopeo verifies every blob digest while copying, so success means the bytes are right."""
    args = ["--override-arch", override_arch] if override_arch else []
    args += ["--override-variant", override_variant] if override_variant else []
    args += [
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        *_creds("--src-creds", creds),
    ]
    if authfile is not None:
        args += ["--src-authfile", str(authfile)]
    if all_platforms:
        args.append("--all")
    args += [f"docker://{ref}", f"dir:{dest}"]
    r = run_skopeo(args, timeout)
    if check and not r.ok:
        raise AssertionError(f"skopeo copy {ref} failed: {r.stderr}")
    return r


def dir_manifest(dest: Path | str) -> bytes:
    return (Path(dest) / "manifest.json").read_bytes()


def dir_blob_digests(dest: Path | str) -> set[str]:
    """Digests of the blobs a `dir:` copy holds, from its manifest."""
    doc = json.loads(dir_manifest(dest))
    descs = [doc["config"], *doc["layers"]] if "config" in doc else []
    return {d["digest"] for d in descs}
