"""What every benchmark needs: an empty database per backend, a real `portal serve` subprocess on a free
port, a tenant with an API key, and (optionally) a py-spy profile of the server while it works.

Benchmarks measure the product as it is deployed: uvicorn in its own process, spoken to over loopback HTTP.
Nothing here imports the app into the benchmark's process, so the client's CPU and the server's CPU are
counted apart by the operating system, as they would be in production (except that this machine has only
two cores, which the client and the server share).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    # Benchmarks run as scripts (`python bench/x.py`); the test support package lives at the repo root.
    sys.path.insert(0, str(REPO))

from tests.support.postgres import throwaway_cluster  # noqa: E402

BACKENDS = ("sqlite", "postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def bench_database(backend: str, workdir: Path) -> Iterator[str]:
    """A SQLAlchemy URL for `backend`: a new SQLite file in `workdir`; for PostgreSQL the database named by
    PORTAL_BENCH_DATABASE_URL, else a throwaway cluster that is removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}; one of {BACKENDS}")
    given = os.environ.get("PORTAL_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    with throwaway_cluster() as url:
        yield url


def driver_url(url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL, for benchmarks that talk to the bare driver."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def portal_executable() -> Path:
    # The `portal` script of the interpreter running the benchmark, so a bench run uses the same install.
    return Path(sys.executable).parent / "portal"


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int
    log_path: Path


class Portal:
    """The `portal` command pointed at one database and one storage directory, as a deployment would be.

    Commands run with `workdir` as their current directory so that a developer's own `.env` in the repo
    cannot change what is measured.
    """

    def __init__(self, database_url: str, workdir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.env = {**os.environ, "PORTAL_DATABASE_URL": database_url,
                    "PORTAL_STORAGE_DIR": str(workdir / "documents"), "NO_PROXY": "127.0.0.1,localhost",
                    **(extra_env or {})}

    def run(self, *args: str) -> str:
        """Run a `portal` subcommand; returns its stdout, raises with its stderr when it fails."""
        done = subprocess.run([str(portal_executable()), *args], env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"portal {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def upgrade(self) -> None:
        self.run("db", "upgrade")

    def create_tenant(self, slug: str, name: str) -> str:
        """Create an organization and an API key for it; returns the key."""
        self.run("org", "create", slug, "--name", name)
        return self.run("apikey", "create", slug, "--name", "benchmark").strip().splitlines()[-1]

    @contextmanager
    def serve(self, *, workers: int = 1, ready_timeout: float = 30.0) -> Iterator[Server]:
        """`portal serve` on a free loopback port until the block ends; the server is always stopped."""
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = self.workdir / f"server-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(portal_executable()), "serve", "--port", str(port), "--workers", str(workers)],
                env={**self.env, "PORTAL_BASE_URL": base_url}, cwd=self.workdir, stdout=log,
                stderr=subprocess.STDOUT)
            try:
                _wait_until_ready(base_url, process, log_path, ready_timeout)
                yield Server(base_url, process.pid, log_path)
            finally:
                _stop(process)


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    # The OpenAPI document needs no key and no database, so answering it means the app has started.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/api/v1/openapi.json", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout:.0f}s:\n{tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGINT is uvicorn's graceful shutdown (the lifespan disposes of the engine); kill only if it hangs.
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def py_spy(pid: int, output: Path | None, *, rate: int = 200) -> Iterator[None]:
    """Sample process `pid` with py-spy into `output` while the block runs; a no-op when `output` is None.
    The suffix picks the format: .svg a flame graph, .json speedscope, .txt collapsed stacks (for grep).
    py-spy is not a project dependency: `pip install py-spy` to use this."""
    if output is None:
        yield
        return
    executable = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if executable is None:
        raise RuntimeError("py-spy not found on PATH; pip install py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    # --nonblocking: sample without pausing the server, so the profile costs the measurement little.
    kind = {".json": "speedscope", ".txt": "raw"}.get(output.suffix, "flamegraph")
    process = subprocess.Popen([executable, "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate), "--nonblocking",
                                "--format", kind, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # py-spy needs a moment to attach; samples before that would be lost anyway
        yield
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        if process.returncode not in (0, -signal.SIGINT) and not output.exists():
            print(f"py-spy failed: {err.decode(errors='replace').strip()}", file=sys.stderr)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its live child processes (uvicorn's workers) have used so far
    (Linux /proc), to see where the two cores went."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = [Path(f"/proc/{current}/task/{task.name}/children").read_text().split()
                        for task in Path(f"/proc/{current}/task").iterdir()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # a child that ended between the listing and the read
        # Fields 14 and 15 of stat(5) (utime, stime); the split above starts at field 3.
        total += (int(fields[11]) + int(fields[12])) / ticks
        pending.extend(int(child) for listed in children for child in listed)
    return total


@dataclass(frozen=True)
class Checkout:
    invoice: str
    public_id: str
    amount_minor: int
    currency: str


def open_checkouts(url: str, slug: str, customer: str, *, external_id_prefix: str = "") -> list[Checkout]:
    """One open Stripe checkout per invoice of the organization (or per invoice whose external id starts with
    the prefix), made the way the pay page makes them: through the domain, 500 per transaction."""
    import datetime as dt
    import secrets

    import sqlalchemy as sa

    from portal.db import Database
    from portal.db.invoices import invoices
    from portal.db.organizations import organizations
    from portal.domain import checkouts, links

    database = Database.from_url(url)
    now = dt.datetime.now(dt.UTC)
    made: list[Checkout] = []
    try:
        with database.transaction() as conn:
            org_id = conn.scalar(sa.select(organizations.c.id).where(organizations.c.slug == slug))
            link = links.create_link(conn, org_id, customer, now, days=30)
            rows = conn.execute(sa.select(invoices.c.id, invoices.c.external_id).where(
                invoices.c.organization_id == org_id, invoices.c.external_id.like(f"{external_id_prefix}%"))
                .order_by(invoices.c.id)).all()
        for start in range(0, len(rows), 500):
            with database.transaction() as conn:
                scope = links.resolve(conn, link.id, now)
                for row in rows[start:start + 500]:
                    checkout, superseded = checkouts.start(conn, scope, [row.id], "stripe", "card", now)
                    assert not superseded
                    checkouts.opened_at_provider(conn, checkout.id, "cs_test_" + secrets.token_hex(28),
                                                 "https://checkout.stripe.com/c/pay/bench", None, now)
                    made.append(Checkout(row.external_id, checkout.public_id, int(checkout.amount_minor),
                                         checkout.currency))
    finally:
        database.dispose()
    return made


def checkout_completed(checkout: Checkout, *, email: str, name: str) -> tuple[str, str, bytes]:
    """checkout.session.completed for `checkout`, as Stripe sends it (pretty-printed): (event id, payment
    intent id, body)."""
    import json
    import secrets

    created = int(time.time())
    event_id, intent = "evt_" + secrets.token_hex(12), "pi_" + secrets.token_hex(12)
    session = {
        "id": "cs_test_a1" + secrets.token_hex(28), "object": "checkout.session",
        "amount_subtotal": checkout.amount_minor, "amount_total": checkout.amount_minor,
        "client_reference_id": checkout.public_id, "created": created - 60, "currency": checkout.currency.lower(),
        "customer": None, "customer_details": {"email": email, "name": name, "address": {"country": "BE"},
                                               "phone": None, "tax_exempt": "none"},
        "expires_at": created + 86_340, "livemode": False, "locale": "fr", "metadata": {"checkout": checkout.public_id},
        "mode": "payment", "payment_intent": intent, "payment_method_types": ["card"], "payment_status": "paid",
        "status": "complete", "submit_type": "pay",
        "success_url": "https://portal.example/pay/return?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://portal.example/pay", "ui_mode": "hosted", "url": None,
    }
    event = {"id": event_id, "object": "event", "api_version": "2025-09-30.clover", "created": created,
             "data": {"object": session, "previous_attributes": {"status": "open", "payment_status": "unpaid"}},
             "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
             "type": "checkout.session.completed"}
    return event_id, intent, json.dumps(event, indent=2).encode()
