"""Pull benchmark: dproxy against CNCF distribution in proxy mode, same upstream, same machine.

    uv run python -m bench.pull_bench                 # 3 runs, 8 concurrent, 150 MiB image
    uv run python -m bench.pull_bench --quick         # smoke check: 1 run, 15 MiB image

A synthetic OCI image (--layers-mb, default 10,20,30,40,50 MiB) is pushed to a fresh local
upstream (the real `docker-registry`, tests.support.UpstreamRegistry).  Two proxies of that
upstream are then measured, alternating within every run:

  dproxy        `dproxy serve` (embedded default, tests.support.dproxy.DproxyServer), pulled
                as a Guest of group `bench` through HOST/bench/dependency_proxy/containers/...
  distribution  `docker-registry serve` with `proxy: remoteurl: <upstream>` and its own
                filesystem storage, pulled anonymously at HOST/library/...

Phases (each run): `cold` = 1 pull right after a reset (new process, empty data dir),
`warm` = the same pull again, `conc_cold` = --concurrency simultaneous pulls right after
another reset, `conc_warm` = the same again.  The client is skopeo (`copy docker://... dir:`
into /dev/shm, deleted after every pull; skopeo checks every digest, and the bench checks
that the manifest digest and the blob set are the pushed ones).  After every phase the
bench waits until the upstream's access log has been still for --settle seconds (proxies
may go on fetching after their clients are done), then counts what the upstream served
during the phase.  It also reads the proxy process's peak RSS (VmHWM).  A `direct` pull
from the upstream itself is timed once per run as a reference.

Output: a Markdown table of medians on stdout, progress on stderr, all raw samples as JSON
in bench/results/latest.json, and the logs of every process in bench/results/logs/.
Needs the Debian packages docker-registry and skopeo; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

import yaml

from tests.support import Image, ImageBuilder, ImageSpec, LogEntry, MiB, UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.skopeo import SKOPEO_BIN
from tests.support.upstream import REGISTRY_BIN, free_port

PHASES = ("cold", "warm", "conc_cold", "conc_warm")
REPOSITORY = "library/pull-bench"
TAG = "1"
GROUP = "bench"
USER = ("bench-puller", "bench-puller-password")
HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_LAYERS_MB = (10.0, 20.0, 30.0, 40.0, 50.0)
QUICK_LAYERS_MB = (1.0, 2.0, 3.0, 4.0, 5.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- process memory
def proc_memory(pid: int | None) -> dict[str, int | None]:
    """VmHWM (peak RSS) and VmRSS of a live process, in KiB (None if unreadable)."""
    out: dict[str, int | None] = {"vmhwm_kib": None, "vmrss_kib": None}
    if pid is None:
        return out
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[f"{key.lower()}_kib"] = int(value.split()[0])
    return out


def proc_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time a live process has used so far, in seconds."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state) of proc(5): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- the two proxies
class Proxy:
    """A pull-through cache under test that can be reset to a fresh process and cache."""

    name: ClassVar[str]
    creds: tuple[str, str] | None = None

    def __init__(self, root: Path, upstream_url: str, logs_dir: Path) -> None:
        self.root = root
        self.upstream_url = upstream_url
        self.logs_dir = logs_dir
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    def reset(self) -> float:
        """Stop the current process, wipe its data, start a fresh one; seconds to ready."""
        self.stop()
        self.generation += 1
        started = time.perf_counter()
        self._start()
        return time.perf_counter() - started

    def ref(self) -> str:
        raise NotImplementedError

    def pid(self) -> int | None:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_files(self) -> list[Path]:
        return sorted(p for p in self.logs_dir.glob(f"{self.name}-*") if p.is_file())


class DproxyProxy(Proxy):
    name = "dproxy"
    creds = USER

    def __init__(
        self, root: Path, upstream_url: str, logs_dir: Path, *, log_level: str = "warning"
    ) -> None:
        super().__init__(root, upstream_url, logs_dir)
        self.log_level = log_level
        self.server: DproxyServer | None = None
        self.data_dir: Path | None = None

    def _start(self) -> None:
        self.data_dir = self.root / f"data-{self.generation}"
        env = {
            "DPROXY_LOG_LEVEL": self.log_level,
            # the embedded default: SQLite + files in the data dir, in-process coordination
            "DPROXY_DATABASE_URL": "",
            "DPROXY_STORAGE_URL": "",
            "DPROXY_REDIS_URL": "",
            "DPROXY_UPSTREAM_USERNAME": "",
            "DPROXY_UPSTREAM_PASSWORD": "",
        }
        server = DproxyServer(self.data_dir, self.upstream_url, env=env)
        self.server = server  # before start(): stop() must reach a half-started process
        server.start()
        server.add_group(GROUP)
        server.add_user(*USER)
        server.add_member(GROUP, USER[0])  # default level: Guest

    def ref(self) -> str:
        assert self.server is not None
        return self.server.image(GROUP, f"{REPOSITORY}:{TAG}")

    def pid(self) -> int | None:
        if self.server is None:
            return None
        # DproxyServer keeps its Popen objects here; the embedded default is one process.
        process = self.server._processes.get("all")
        return process.pid if process is not None and process.poll() is None else None

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
            self._keep_logs(server)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def _keep_logs(self, server: DproxyServer) -> None:
        for path in sorted(server.logs.glob("*.log")):
            shutil.copy2(path, self.logs_dir / f"dproxy-{self.generation}-{path.name}")


class DistributionProxy(Proxy):
    """`docker-registry serve` (CNCF distribution 2.8) with a `proxy:` section."""

    name = "distribution"

    def __init__(self, root: Path, upstream_url: str, logs_dir: Path) -> None:
        super().__init__(root, upstream_url, logs_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.storage: Path | None = None

    def config(self, port: int, storage: Path) -> dict[str, Any]:
        return {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},  # as in Debian's default config
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"{HOST}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "proxy": {"remoteurl": self.upstream_url},
        }

    def _start(self) -> None:
        self.storage = self.root / f"data-{self.generation}"
        self.storage.mkdir(parents=True)
        log_path = self.logs_dir / f"distribution-{self.generation}.log"
        # REGISTRY_* variables would override the config file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        for _attempt in range(3):
            self.port = free_port(HOST)
            config_path = self.root / f"config-{self.generation}.yml"
            config_path.write_text(
                yaml.safe_dump(self.config(self.port, self.storage), sort_keys=False)
            )
            offset = log_path.stat().st_size if log_path.exists() else 0
            with log_path.open("ab") as out:
                self.process = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            if self._wait_ready(log_path, offset):
                return
        raise RuntimeError(f"distribution proxy: no free port after 3 tries, see {log_path}")

    def _wait_ready(self, log_path: Path, offset: int, timeout: float = 30.0) -> bool:
        """True when our process logged `listening on` and answers GET /v2/; False if the
        port was taken (the caller retries); raises on any other failure."""
        assert self.process is not None
        listening = f"listening on {HOST}:{self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with log_path.open("rb") as fh:
                fh.seek(offset)
                text = fh.read().decode("utf-8", "replace")
            if self.process.poll() is not None:
                self.process = None
                if "address already in use" in text:
                    return False
                raise RuntimeError(f"distribution proxy exited:\n{text[-2000:]}")
            if listening in text:
                try:
                    with urllib.request.urlopen(f"http://{HOST}:{self.port}/v2/", timeout=1):
                        return True
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"distribution proxy not ready after {timeout} s, see {log_path}")

    def ref(self) -> str:
        return f"{HOST}:{self.port}/{REPOSITORY}:{TAG}"

    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def stop(self) -> None:
        # SIGKILL: distribution needs ~2 s for SIGTERM, and its cache is thrown away anyway.
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        if self.storage is not None:
            shutil.rmtree(self.storage, ignore_errors=True)
            self.storage = None


# ---------------------------------------------------------------------- pulling
@dataclass
class PullSpec:
    image: Image
    dest_root: Path
    auth_file: Path
    timeout: float


def skopeo_env(auth_file: Path) -> dict[str, str]:
    # An empty auth file: credentials of the machine never reach the proxies.
    return dict(os.environ, REGISTRY_AUTH_FILE=str(auth_file))


def verify_pull(dest: Path, image: Image) -> str | None:
    """None if `dest` (a skopeo dir: copy) holds exactly the pushed image, else why not."""
    manifest = dest / "manifest.json"
    if not manifest.is_file():
        return "no manifest.json"
    digest = "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
    if digest != image.digest:
        return f"manifest digest {digest} != pushed {image.digest}"
    have = {p.name for p in dest.iterdir()} - {"manifest.json", "version"}
    want = {blob.hex for blob in image.own_blobs}
    if have != want:
        return f"blob set differs: missing {sorted(want - have)}, extra {sorted(have - want)}"
    return None


def pull_batch(
    ref: str, creds: tuple[str, str] | None, n: int, label: str, spec: PullSpec
) -> dict[str, Any]:
    """Start `n` skopeo pulls of `ref` at once; wall = first start to last finish."""
    dests = [spec.dest_root / f"{label}-{i}" for i in range(n)]
    errs = [spec.dest_root / f"{label}-{i}.stderr" for i in range(n)]
    for dest in dests:
        shutil.rmtree(dest, ignore_errors=True)
    cred_args = ["--src-creds", f"{creds[0]}:{creds[1]}"] if creds else []
    env = skopeo_env(spec.auth_file)
    procs: list[subprocess.Popen[bytes]] = []
    handles: list[IO[bytes]] = []
    starts: list[float] = []
    ends: dict[int, float] = {}
    timed_out: set[int] = set()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            handle = errs[i].open("wb")
            handles.append(handle)
            cmd = [
                SKOPEO_BIN,
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                *cred_args,
                f"docker://{ref}",
                f"dir:{dests[i]}",
            ]
            starts.append(time.perf_counter())
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=handle, env=env))
        deadline = t0 + spec.timeout
        while len(ends) < n:
            now = time.perf_counter()
            for i, proc in enumerate(procs):
                if i not in ends and proc.poll() is not None:
                    ends[i] = now
            if len(ends) < n and now > deadline:
                for i, proc in enumerate(procs):
                    if i not in ends:
                        proc.kill()
                        proc.wait()
                        ends[i] = time.perf_counter()
                        timed_out.add(i)
            time.sleep(0.005)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for stream in handles:
            stream.close()
    wall = max(ends.values()) - t0
    pulls: list[dict[str, Any]] = []
    for i, proc in enumerate(procs):
        stderr = errs[i].read_text(errors="replace").strip()
        error: str | None = None
        if i in timed_out:
            error = f"timed out after {spec.timeout:.0f} s"
        elif proc.returncode != 0:
            error = f"skopeo exit {proc.returncode}: {stderr[-1500:]}"
        else:
            error = verify_pull(dests[i], spec.image)
        pulls.append({"seconds": round(ends[i] - starts[i], 4), "error": error})
        shutil.rmtree(dests[i], ignore_errors=True)
        errs[i].unlink(missing_ok=True)
    return {"wall_s": round(wall, 4), "pulls": pulls}


# ---------------------------------------------------------------------- upstream accounting
def wait_quiet(upstream: UpstreamRegistry, quiet: float, timeout: float) -> tuple[float, bool]:
    """Wait until the upstream's access log has not grown for `quiet` seconds.
    Returns (seconds waited, whether it went quiet before `timeout`)."""
    started = time.monotonic()
    size = upstream.mark()
    still_since = started
    while True:
        time.sleep(0.05)
        now = time.monotonic()
        current = upstream.mark()
        if current != size:
            size, still_since = current, now
        elif now - still_since >= quiet:
            return now - started, True
        if now - started > timeout:
            return now - started, False


def upstream_stats(entries: Sequence[LogEntry]) -> dict[str, Any]:
    per_blob: dict[str, int] = {}
    stats: dict[str, Any] = {
        "requests": len(entries),
        "blob_get": 0,
        "blob_get_bytes": 0,
        "blob_head": 0,
        "manifest_get": 0,
        "manifest_head": 0,
        "other": 0,
        "non_2xx": 0,
    }
    for entry in entries:
        if not 200 <= entry.status < 300:
            stats["non_2xx"] += 1
        if entry.is_blob and entry.method == "GET":
            stats["blob_get"] += 1
            stats["blob_get_bytes"] += entry.size
            digest = entry.path.rsplit("/", 1)[1].split("?", 1)[0]
            per_blob[digest] = per_blob.get(digest, 0) + 1
        elif entry.is_blob and entry.method == "HEAD":
            stats["blob_head"] += 1
        elif entry.is_manifest and entry.method == "GET":
            stats["manifest_get"] += 1
        elif entry.is_manifest and entry.method == "HEAD":
            stats["manifest_head"] += 1
        else:
            stats["other"] += 1
    stats["max_gets_one_blob"] = max(per_blob.values(), default=0)
    stats["blob_gets_by_digest"] = dict(sorted(per_blob.items()))
    stats["non_2xx_requests"] = [
        f"{e.method} {e.path} {e.status}" for e in entries if not 200 <= e.status < 300
    ][:20]
    return stats


# ---------------------------------------------------------------------- the benchmark
@dataclass
class Bench:
    upstream: UpstreamRegistry
    spec: PullSpec
    concurrency: int
    settle: float
    settle_timeout: float

    def phase(self, proxy: Proxy | None, phase: str, run: int) -> dict[str, Any]:
        """One phase: pulls, wait for the upstream to go quiet, count, read memory."""
        name = proxy.name if proxy is not None else "upstream"
        n = self.concurrency if phase.startswith("conc") else 1
        if proxy is not None:
            ref, creds = proxy.ref(), proxy.creds
        else:
            ref, creds = f"{self.upstream.address}/{REPOSITORY}:{TAG}", None
        pid = proxy.pid() if proxy is not None else None
        cpu_before = proc_cpu_seconds(pid)
        mark = self.upstream.mark()
        result = pull_batch(ref, creds, n, f"{name}-{phase}-{run}", self.spec)
        settled_s, quiet = wait_quiet(self.upstream, self.settle, self.settle_timeout)
        cpu_after = proc_cpu_seconds(pid)
        entries = self.upstream.requests(since=mark, settle=0)
        sample: dict[str, Any] = {
            "proxy": name,
            "phase": phase,
            "run": run,
            "n": n,
            **result,
            "failed": sum(1 for p in result["pulls"] if p["error"]),
            "settle_s": round(settled_s, 3),
            "upstream_went_quiet": quiet,
            "upstream": upstream_stats(entries),
        }
        if proxy is not None:
            sample["generation"] = proxy.generation
            sample["proxy_cpu_s"] = (
                round(cpu_after - cpu_before, 2)
                if cpu_before is not None and cpu_after is not None
                else None
            )
            sample.update(proc_memory(pid))
        up = sample["upstream"]
        log(
            f"  {name:<12} {phase:<9} n={n} wall={result['wall_s']:.2f}s "
            f"failed={sample['failed']} upstream: blob GETs={up['blob_get']} "
            f"(max {up['max_gets_one_blob']}/blob, {up['blob_get_bytes'] / 1e6:.0f} MB) "
            f"blob HEADs={up['blob_head']} manifest GET/HEAD={up['manifest_get']}/"
            f"{up['manifest_head']} non-2xx={up['non_2xx']}"
            + (f" cpu={sample['proxy_cpu_s']}s" if sample.get("proxy_cpu_s") is not None else "")
            + (f" vmhwm={sample['vmhwm_kib'] / 1024:.0f}MiB" if sample.get("vmhwm_kib") else "")
            + ("" if quiet else " UPSTREAM STILL BUSY")
        )
        for pull in result["pulls"]:
            if pull["error"]:
                log(f"    pull failed: {pull['error'][:500]}")
        return sample

    def run(self, proxies: Sequence[Proxy], runs: int) -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = []
        for run in range(1, runs + 1):
            log(f"run {run}/{runs}")
            for proxy in proxies:
                for phases in (("cold", "warm"), ("conc_cold", "conc_warm")):
                    ready_s = proxy.reset()
                    ready_hwm = proc_memory(proxy.pid())["vmhwm_kib"]
                    log(f"  {proxy.name:<12} reset: ready in {ready_s:.2f}s ({proxy.ref()})")
                    self.upstream.wait_quiet(0.2)
                    for phase in phases:
                        sample = self.phase(proxy, phase, run)
                        sample["ready_s"] = round(ready_s, 3)
                        sample["ready_vmhwm_kib"] = ready_hwm
                        samples.append(sample)
            samples.append(self.phase(None, "direct", run))
        for proxy in proxies:
            proxy.stop()
        return samples


# ---------------------------------------------------------------------- report
def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _pick(samples: Sequence[dict[str, Any]], proxy: str, phase: str) -> list[dict[str, Any]]:
    return [s for s in samples if s["proxy"] == proxy and s["phase"] == phase]


def _walls(samples: Sequence[dict[str, Any]]) -> list[float]:
    """Wall times of the samples whose pulls all succeeded."""
    return [float(s["wall_s"]) for s in samples if s["failed"] == 0]


def _count(samples: Sequence[dict[str, Any]], key: str) -> str:
    values = [int(s["upstream"][key]) for s in samples]
    if not values:
        return "n/a"
    text = f"{statistics.median(values):g}"
    return text if min(values) == max(values) else f"{text} ({min(values)}..{max(values)})"


def _cpu(samples: Sequence[dict[str, Any]]) -> str:
    values = [s["proxy_cpu_s"] for s in samples if s.get("proxy_cpu_s") is not None]
    return f"{statistics.median(values):.2f}" if values else "n/a"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def summarize(samples: Sequence[dict[str, Any]], proxies: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for phase in (*PHASES, "direct"):
        for proxy in (*proxies, "upstream"):
            picked = _pick(samples, proxy, phase)
            if not picked:
                continue
            summary[f"{proxy}/{phase}"] = {
                "wall_s_median": _median(_walls(picked)),
                "wall_s_samples": [s["wall_s"] for s in picked],
                "per_pull_s_median": _median(
                    [p["seconds"] for s in picked for p in s["pulls"] if not p["error"]]
                ),
                "failed_pulls": sum(s["failed"] for s in picked),
                "proxy_cpu_s_median": _median(
                    [s["proxy_cpu_s"] for s in picked if s.get("proxy_cpu_s") is not None]
                ),
                **{
                    f"upstream_{key}_median": statistics.median(
                        [s["upstream"][key] for s in picked]
                    )
                    for key in (
                        "blob_get",
                        "blob_get_bytes",
                        "max_gets_one_blob",
                        "blob_head",
                        "manifest_get",
                        "manifest_head",
                        "non_2xx",
                    )
                },
            }
    for proxy in proxies:
        hwm = [s["vmhwm_kib"] for s in samples if s["proxy"] == proxy and s.get("vmhwm_kib")]
        summary[f"{proxy}/peak_rss_kib"] = max(hwm) if hwm else None
        ready = [
            s["ready_vmhwm_kib"]
            for s in samples
            if s["proxy"] == proxy and s.get("ready_vmhwm_kib") and s["phase"] in PHASES[::2]
        ]
        summary[f"{proxy}/ready_rss_kib_median"] = statistics.median(ready) if ready else None
    return summary


def markdown(
    samples: Sequence[dict[str, Any]], meta: dict[str, Any], summary: dict[str, Any]
) -> str:
    a, b = "dproxy", "distribution"
    lines = [
        f"Image: {meta['image_bytes'] / 1e6:.1f} MB in {meta['layers']} layers + config "
        f"({meta['layers_mb']} MiB payload, OCI), skopeo copy to /dev/shm; "
        f"runs={meta['runs']}, concurrency={meta['concurrency']}, {meta['cpus']} CPUs. "
        "Walls and proxy CPU seconds (user+system, pulls plus settle) are medians; "
        "upstream counts are medians (min..max when the runs differ).",
        "",
        f"| phase | pulls | {a} wall | {b} wall | {a} / {b} | upstream blob GETs ({a} / {b}) "
        f"| max GETs of one blob ({a} / {b}) | upstream manifest GETs ({a} / {b}) "
        f"| upstream manifest HEADs ({a} / {b}) | proxy CPU s ({a} / {b}) "
        f"| failed pulls ({a} / {b}) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase in PHASES:
        sa, sb = _pick(samples, a, phase), _pick(samples, b, phase)
        if not sa and not sb:
            continue
        wa, wb = _median(_walls(sa)), _median(_walls(sb))
        ratio = f"{wa / wb:.2f}x" if wa is not None and wb else "n/a"
        n = (sa or sb)[0]["n"]
        fa = sum(s["failed"] for s in sa)
        fb = sum(s["failed"] for s in sb)
        lines.append(
            f"| {phase} | {n} | {_secs(wa)} | {_secs(wb)} | {ratio} "
            f"| {_count(sa, 'blob_get')} / {_count(sb, 'blob_get')} "
            f"| {_count(sa, 'max_gets_one_blob')} / {_count(sb, 'max_gets_one_blob')} "
            f"| {_count(sa, 'manifest_get')} / {_count(sb, 'manifest_get')} "
            f"| {_count(sa, 'manifest_head')} / {_count(sb, 'manifest_head')} "
            f"| {_cpu(sa)} / {_cpu(sb)} | {fa} / {fb} |"
        )
    lines.append("")

    def mib(kib: float | None) -> str:
        return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"

    lines.append(
        "Peak RSS (VmHWM, largest over all processes of each proxy): "
        + ", ".join(
            f"{p} {mib(summary.get(f'{p}/peak_rss_kib'))} "
            f"(right after start: {mib(summary.get(f'{p}/ready_rss_kib_median'))})"
            for p in (a, b)
        )
    )
    direct = _pick(samples, "upstream", "direct")
    if direct:
        lines.append(
            f"Reference, 1 pull straight from the upstream: {_secs(_median(_walls(direct)))} "
            f"(blob GETs {_count(direct, 'blob_get')})"
        )
    lines.append("")
    lines.append("Wall samples per run:")
    for phase in PHASES:
        for proxy in (a, b):
            picked = _pick(samples, proxy, phase)
            if picked:
                walls = ", ".join(f"{s['wall_s']:.2f}" for s in picked)
                lines.append(f"- {phase} {proxy}: {walls} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def parse_layers(text: str) -> tuple[float, ...]:
    try:
        sizes = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of MiB sizes: {text!r}") from exc
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"not a list of positive MiB sizes: {text!r}")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pull_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per phase (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="pulls in conc_* phases")
    parser.add_argument(
        "--layers-mb",
        type=parse_layers,
        default=None,
        help="layer payload sizes in MiB (default 10,20,30,40,50)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke check: runs=1, 1,2,3,4,5 MiB layers"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds the upstream log must stay still to end a phase (default 2)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--logs-dir", type=Path, default=RESULTS_DIR / "logs")
    parser.add_argument(
        "--dproxy-log-level", default="warning", help="DPROXY_LOG_LEVEL (default warning)"
    )
    parser.add_argument("--pull-timeout", type=float, default=900.0)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (upstream storage) afterwards"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.layers_mb is None:
        args.layers_mb = QUICK_LAYERS_MB if args.quick else DEFAULT_LAYERS_MB
    if args.runs < 1 or args.concurrency < 1:
        parser.error("--runs and --concurrency must be at least 1")
    return args


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unavailable: {exc}"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _git_commit() -> str:
    version = _version(["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"])
    return version if version and " " not in version else "unknown"


def check_tools() -> None:
    missing = [b for b in (REGISTRY_BIN, SKOPEO_BIN) if not shutil.which(b)]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y docker-registry skopeo")


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so that every `finally` cleanup runs."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    # Everything is on loopback: an HTTP proxy from the environment must never be used.
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = no_proxy

    layer_sizes = tuple(int(mb * MiB) for mb in args.layers_mb)
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="dproxy-pull-bench-"))
    dest_root = Path(
        tempfile.mkdtemp(prefix="dproxy-pull-bench-", dir=shm if shm.is_dir() else work)
    )
    shutil.rmtree(args.logs_dir, ignore_errors=True)
    args.logs_dir.mkdir(parents=True)
    auth_file = work / "skopeo-auth.json"
    auth_file.write_text("{}")
    proxies: list[Proxy] = []
    upstream: UpstreamRegistry | None = None
    try:
        with sigterm_as_exit():
            log(f"building image ({args.layers_mb} MiB layers) ...")
            image = ImageBuilder().build(
                ImageSpec(name="pull-bench", format="oci", layer_sizes=layer_sizes)
            )
            upstream = UpstreamRegistry(work / "upstream").start()
            upstream.push(image, REPOSITORY, TAG)
            log(
                f"upstream {upstream.url}: pushed {REPOSITORY}:{TAG} {image.digest} "
                f"({image.total_blob_size / 1e6:.1f} MB in {len(image.blobs)} blobs)"
            )
            proxies = [
                DproxyProxy(
                    work / "dproxy", upstream.url, args.logs_dir, log_level=args.dproxy_log_level
                ),
                DistributionProxy(work / "distribution", upstream.url, args.logs_dir),
            ]
            bench = Bench(
                upstream=upstream,
                spec=PullSpec(image, dest_root, auth_file, args.pull_timeout),
                concurrency=args.concurrency,
                settle=args.settle,
                settle_timeout=max(60.0, args.settle * 10),
            )
            started = datetime.now(UTC)
            samples = bench.run(proxies, args.runs)
    finally:
        for proxy in proxies:
            with contextlib.suppress(Exception):
                proxy.stop()
        if upstream is not None:
            upstream.stop()
            for path in (upstream.access_log, upstream.app_log):
                if path.exists():
                    shutil.copy2(path, args.logs_dir / f"upstream-{path.name}")
        shutil.rmtree(dest_root, ignore_errors=True)
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable, "-m", "bench.pull_bench", *(argv or sys.argv[1:])]),
        "runs": args.runs,
        "concurrency": args.concurrency,
        "settle_s": args.settle,
        "layers_mb": ",".join(f"{mb:g}" for mb in args.layers_mb),
        "layers": len(layer_sizes),
        "image": f"{REPOSITORY}:{TAG}",
        "image_digest": image.digest,
        "image_bytes": image.total_blob_size,
        "blobs": {b.digest: b.size for b in image.blobs},
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "docker_registry": _version([REGISTRY_BIN, "--version"]),
        "skopeo": _version([SKOPEO_BIN, "--version"]),
        "dproxy_git_commit": _git_commit(),
        "dproxy_log_level": args.dproxy_log_level,
        "logs_dir": str(args.logs_dir),
    }
    summary = summarize(samples, [p.name for p in proxies])
    table = markdown(samples, meta, summary)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"meta": meta, "summary": summary, "table": table, "samples": samples}, indent=1)
        + "\n"
    )
    print(table)
    print(f"\nraw samples: {args.json}; logs: {args.logs_dir}")
    failed = sum(s["failed"] for s in samples)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
