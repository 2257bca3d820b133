"""Postgres and Redis for tests: the machine's own when they answer on 127.0.0.1, otherwise
ones started here (temporary data directories, free loopback ports), stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.upstream import free_port

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(port: int, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _answers(port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start on port {port}")


@contextmanager
def redis_url(workdir: Path) -> Iterator[str]:
    """A Redis URL with an empty database to use alone."""
    if os.environ.get("DPROXY_TEST_REDIS_URL"):
        yield os.environ["DPROXY_TEST_REDIS_URL"]
        return
    if _answers(6379):
        # The machine's server: databases 8-15 are this suite's (one per xdist worker),
        # emptied first.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
        url = f"redis://127.0.0.1:6379/{8 + int(worker or 0) % 8}"
        subprocess.run(["redis-cli", "-u", url, "flushdb"], check=True, capture_output=True)
        yield url
        return
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(port, "redis-server", process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _psql(port: int, sql: str) -> None:
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ],
        check=True,
        capture_output=True,
    )


@contextmanager
def postgres_server(workdir: Path) -> Iterator[int]:
    """The port of a Postgres that accepts `postgres` without a password on 127.0.0.1."""
    if _answers(5432):
        yield 5432
        return
    if not POSTGRES_BIN_DIRS:
        raise RuntimeError(
            "PostgreSQL is neither running nor installed (apt-get install postgresql)"
        )
    bin_dir = POSTGRES_BIN_DIRS[0]
    data = workdir / "pgdata"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.chown(workdir, "postgres", "postgres")
    # initdb refuses to run as root: run the server as the `postgres` system user.
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            *as_postgres,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    subprocess.run(
        [
            *as_postgres,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(workdir / "log"),
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir}",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        _wait(port, "postgres")
        yield port
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )


def database_url(port: int, name: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{name}"


@contextmanager
def postgres_database(port: int, template: str | None = None) -> Iterator[str]:
    """A new database (empty, or a copy of `template`); dropped afterwards. Yields its
    SQLAlchemy asyncpg URL."""
    name = f"dproxy_test_{uuid.uuid4().hex[:12]}"
    _psql(port, f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield database_url(port, name)
    finally:
        _psql(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def migrated_template(port: int) -> Iterator[str]:
    """A database at the newest schema to copy from: a copy costs ~0.1 s, a migration run
    in a fresh `dproxy migrate` process about 2 s."""
    from dproxy_shared.db import migrate

    with postgres_database(port) as url:
        migrate(url)
        name = url.rsplit("/", 1)[1]
        # A template must have no open connections when it is copied.
        _psql(port, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        try:
            yield name
        finally:
            _psql(port, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")


def flush_redis(url: str) -> None:
    """Empty the suite's Redis database: each dproxy starts without another's state."""
    subprocess.run(["redis-cli", "-u", url, "flushdb"], check=True, capture_output=True)
