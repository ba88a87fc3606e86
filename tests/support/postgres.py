"""A throwaway PostgreSQL cluster for the test run, made with the machine's initdb and pg_ctl.

PostgreSQL refuses to run as root (which CI is), so as root the cluster belongs to the machine's `postgres`
user and its programs run through `runuser`. The cluster listens on loopback only and is removed at exit.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError("PostgreSQL server programs not found: install postgresql (initdb, pg_ctl)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; stops and deletes the cluster afterwards."""
    bindir = _bindir()
    as_root = os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="quittance-pg-"))
    data, sockets = workdir / "data", workdir / "run"
    sockets.mkdir()
    prefix: list[str] = []
    if as_root:
        shutil.chown(workdir, "postgres")
        shutil.chown(sockets, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, cwd=workdir)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "quittance", "--auth=trust", "-E", "UTF8",
        "--locale=C.UTF-8")
    options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"), "-w", "start")
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "quittance", "quittance")
        yield f"postgresql+psycopg://quittance@127.0.0.1:{port}/quittance"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, cwd=workdir)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def database_of_its_own(url: str, prefix: str) -> Iterator[str]:
    """Yields the URL of a new, empty database on the server of `url` (named `prefix` and a random suffix);
    drops it afterwards, whoever is still connected."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        engine.dispose()
