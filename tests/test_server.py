"""`portal serve` as a deployer runs it: gunicorn's arbiter with uvicorn workers on a loopback port, a temporary
SQLite database, and real clients (sockets, urllib, httpx). What is checked is what a client or an operator notices:
a killed worker is replaced while the others serve, so is one whose event loop is stuck, SIGTERM lets a request in
flight finish, SIGINT and a killed arbiter stop every worker, idle keep-alive connections are closed, an early
refusal reaches a client that sends its whole body first, and a client that hangs up mid-body costs one log line.
(Nothing here times out a half-sent header: uvicorn has no such setting, see portal/web/server.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
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

import httpx
import pytest

from portal.db.migrate import upgrade
from tests.support.smtp import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

JSON_LIMIT = 200_000  # PORTAL_LIMIT_JSON_BYTES of the servers here (the default is 5 MB)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    key: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """The worker processes (the arbiter's children)."""
        return [int(child) for task in Path(f"/proc/{self.process.pid}/task").iterdir()
                for child in (task / "children").read_text().split()]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        workers = self.workers() if self.process.poll() is None else []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in workers:  # a worker never outlives the test, whatever happened to the arbiter
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def portal(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "portal.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start(tmp: Path, *args: str, workers: int = 2, port_from_env: bool = False,
          environment: dict[str, str] | None = None, database_url: str | None = None,
          key: str | None = None) -> Server:
    """`portal serve` on a free port (given with --port, or in $PORT as a platform does), once every worker has
    started its app. Its database is a temporary SQLite file unless `database_url` names one (several hosts share
    it); the organization "acme" and an API key of it are created there unless `key` is one already."""
    url = database_url or f"sqlite:///{tmp / 'portal.db'}"
    upgrade(url)
    env = {**os.environ, "PORTAL_DATABASE_URL": url, "PORTAL_STORAGE_DIR": str(tmp / "files"),
           "PORTAL_SECRET_KEYS": "test-server-key", "PORTAL_LIMIT_JSON_BYTES": str(JSON_LIMIT),
           "NO_PROXY": "127.0.0.1,localhost", **(environment or {})}
    if key is None:
        portal(env, "org", "create", "acme", "--name", "Acme")
        key = portal(env, "apikey", "create", "acme", "--name", "tests").strip().splitlines()[-1]
    port = free_port()
    log = tmp / f"server-{port}.log"
    port_args = ["--port", str(port)]
    if port_from_env:
        env["PORT"], port_args = str(port), []
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "portal.cli", "serve", *port_args, "--workers",
                                    str(workers), *args], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    server = Server(process, port, log, key)
    deadline = time.monotonic() + 90
    while server.log_text().count("Application startup complete") < workers or not answers(server.base_url):
        assert process.poll() is None, server.log_text()
        assert time.monotonic() < deadline, f"server did not start:\n{server.log_text()}"
        time.sleep(0.1)
    return server


def answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/api/v1/openapi.json", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tmp_path_factory.mktemp("serve"), "--keep-alive", "1")
    try:
        yield running
    finally:
        running.stop()


def test_a_killed_worker_is_replaced_while_the_other_serves(server: Server) -> None:
    first, second = server.workers()
    os.kill(first, signal.SIGKILL)
    started = time.monotonic()
    served = 0
    while time.monotonic() - started < 3:  # meanwhile, every request (each on a new connection) is answered
        assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        served += 1
    assert served >= 2
    deadline = started + 20
    while not (replacements := set(server.workers()) - {first, second}) or \
            not re.search(rf"\[{min(replacements)}\] INFO \S+ \[-\] Application startup complete", server.log_text()):
        assert time.monotonic() < deadline, f"no replacement worker:\n{server.log_text()}"
        time.sleep(0.1)
    assert sorted(server.workers()) == sorted([second, *replacements])
    assert f"Worker (pid:{first}) was sent SIGKILL" in server.log_text()
    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(server: Server) -> None:
    """--keep-alive 1: an idle connection is closed by the server after about a second (the default is 5)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as client:
        client.sendall(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        idle = time.monotonic()
        while client.recv(65536):  # the rest of the body, then the end of the connection
            pass
        assert 0.8 < time.monotonic() - idle < 5


def urllib_post(server: Server, path: str, body: bytes, key: str) -> tuple[int, dict[str, object]]:
    """urllib sends the whole body before it reads anything, with Connection: close."""
    request = urllib.request.Request(f"{server.base_url}{path}", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_an_early_refusal_reaches_a_client_that_sends_its_whole_body_first(server: Server) -> None:
    """Both refusals go out before the body is read; without reading it first the server closed the connection
    on unread bytes, and urllib saw a broken pipe or a reset instead of the answer."""
    # About 10 MB: more than the kernel buffers between client and server hold, so that the client is still
    # sending when the answer comes (with a small body, the answer could win the race even without the fix).
    body = b'{"items": [' + b'{"number": "x"},' * 600_000 + b'{}]}'
    status, problem = urllib_post(server, "/api/v1/invoices/batch", body, server.key)
    assert (status, problem["status"], problem["detail"]) == (413, 413, f"The body may be at most {JSON_LIMIT} bytes.")
    status, problem = urllib_post(server, "/api/v1/invoices/batch", body, "not-a-key")
    assert (status, problem["title"]) == (401, "Unauthenticated")
    # The connection that took a refusal stays usable for whoever keeps it open (curl, httpx).
    with httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer not-a-key"}) as client:
        assert [client.post("/api/v1/invoices/batch", content=body).status_code for _ in range(2)] == [401, 401]


def test_a_client_that_waits_for_100_continue_is_refused_without_sending_its_body(server: Server) -> None:
    """curl sends large bodies with Expect: 100-continue: it is told no at once, and never asked for the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"POST /api/v1/invoices/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-key\r\n"
                       b"Content-Type: application/json\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer


def test_a_client_that_hangs_up_mid_body_costs_one_short_line(server: Server) -> None:
    before = server.log_text()
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(f"POST /api/v1/invoices/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
                       "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n0123456789".encode())
        time.sleep(0.5)  # the request has reached the handler, which waits for the rest of the body
    deadline = time.monotonic() + 10
    while "/api/v1/invoices/batch" not in (new := server.log_text()[len(before):]):
        assert time.monotonic() < deadline, f"nothing logged:\n{new}"
        time.sleep(0.1)
    time.sleep(1)  # anything else it would log comes now
    new = server.log_text()[len(before):]
    assert len(new.splitlines()) == 1, new
    assert " INFO " in new and "client hung up before sending the whole request: POST /api/v1/invoices/batch" in new
    assert "Traceback" not in new


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_connections(tmp_path: Path) -> None:
    """A deploy stops the server while a billing system is half-way through uploading a customer: the upload
    completes and is stored, new connections are refused (a proxy tries another server), and the server exits 0."""
    server = start(tmp_path, "--graceful-timeout", "20")
    try:
        body = json.dumps({"name": "Brasserie Dupont", "email": "compta@dupont.example", "locale": "fr-BE"}).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(f"PUT /api/v1/customers/C1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                           + body[:10])
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while answers(server.base_url):  # the workers stop listening
                assert time.monotonic() < deadline
                time.sleep(0.1)
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{server.base_url}/api/v1/openapi.json", timeout=5)
            client.sendall(body[10:])
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer
        assert b'"external_id":"C1"' in answer
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()


def test_sigint_stops_every_worker_promptly_and_cleanly(tmp_path: Path) -> None:
    """SIGINT to the arbiter alone (a process manager, a script; Ctrl-C in a terminal signals every process) ends
    the workers through uvicorn's shutdown, lifespan included, instead of leaving them to be killed after the
    graceful timeout. (This server takes its port from $PORT.)"""
    server = start(tmp_path, port_from_env=True)
    try:
        started = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=60) == 0
        assert time.monotonic() - started < 15  # the graceful timeout and the kill would take 35 s
        assert server.log_text().count("Application shutdown complete") == 2
        assert "SIGKILL" not in server.log_text()
    finally:
        server.stop()


def test_the_workers_stop_when_the_arbiter_is_killed(tmp_path: Path) -> None:
    """Nothing keeps serving on the port with nobody to replace it."""
    server = start(tmp_path, "--worker-timeout", "4")
    workers = server.workers()
    server.process.kill()
    server.process.wait()
    try:
        deadline = time.monotonic() + 30
        while alive := [pid for pid in workers if Path(f"/proc/{pid}").exists()
                        and b"State:\tZ" not in Path(f"/proc/{pid}/status").read_bytes()]:
            assert time.monotonic() < deadline, f"workers {alive} outlived the arbiter:\n{server.log_text()}"
            time.sleep(0.1)
        assert server.log_text().count("the arbiter is gone") == 2
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_event_loop_is_stuck_is_replaced(tmp_path: Path) -> None:
    """Why gunicorn manages the processes: a worker whose loop stops turning (here a test app's blocking call)
    stops telling the arbiter it is alive, and is killed and replaced after the worker timeout."""
    port = free_port()
    log = tmp_path / "server.log"
    code = ("import sys; from portal.web.server import Timeouts, serve; "
            f"sys.exit(serve('127.0.0.1', {port}, 1, 'tests.support.blocking_app:app', timeouts=Timeouts(worker=3)))")
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "NO_PROXY": "127.0.0.1"})
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                first = httpx.get(base_url, timeout=2).text
                break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with pytest.raises(httpx.TransportError):  # the stuck worker is killed with the request
            httpx.get(f"{base_url}/block", timeout=30)
        assert "WORKER TIMEOUT" in log.read_text()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                second = httpx.get(base_url, timeout=2).text
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert second != first  # another process answers
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=45)


def test_a_port_in_use_is_refused_with_a_clear_message(server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "PORTAL_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}", "PORTAL_SECRET_KEYS": "k",
           "PORTAL_STORAGE_DIR": str(tmp_path / "documents")}
    subprocess.run([sys.executable, "-m", "portal.cli", "db", "upgrade"], env=env, check=True, timeout=60)
    second = subprocess.run([sys.executable, "-m", "portal.cli", "serve", "--port", str(server.port)],
                            env=env, capture_output=True, timeout=60)
    assert second.returncode == 1
    assert b"Address already in use" in second.stderr
    assert answers(server.base_url)  # the running server is untouched


def test_metrics_add_up_every_workers_requests_and_logs_are_json(tmp_path: Path) -> None:
    server = start(tmp_path, environment={"PORTAL_METRICS_TOKEN": "scrape-me", "PORTAL_LOG_FORMAT": "json"})
    try:
        for _ in range(40):  # each on a new connection, so both workers take some
            assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        scrape = httpx.get(f"{server.base_url}/metrics", headers={"Authorization": "Bearer scrape-me"}, timeout=10)
        assert scrape.status_code == 200
        counted = re.search(r'^quittance_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$',
                            scrape.text, re.M)
        assert counted and float(counted.group(1)) == 40, scrape.text
        pids = {json.loads(line)["pid"] for line in server.log_text().splitlines() if line.startswith("{")
                and "Application startup complete" in line}
        assert len(pids) == 2, "two workers, each counted in the one total"
    finally:
        server.stop()
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines[:5]
    assert all({"time", "level", "logger", "message", "request_id"} <= json.loads(line).keys() for line in lines)
