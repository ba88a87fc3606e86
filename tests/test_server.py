"""`portal serve --workers 2` as a deployer runs it: two processes answering on one port, the connections dealt
between them in turn, a clean stop on SIGTERM, and no half-capacity server left running when one process dies."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from portal.db.migrate import upgrade
from portal.web.server import Dealer, listening_socket
from tests.support.smtp import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def children(pid: int) -> list[int]:
    """The server processes (multiprocessing also starts a resource tracker, which serves nothing)."""
    listed = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
              for child in (task / "children").read_text().split()]
    return [child for child in listed if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    url = f"sqlite:///{tmp_path / 'portal.db'}"
    upgrade(url)
    port = free_port()
    env = {**os.environ, "PORTAL_DATABASE_URL": url, "PORTAL_STORAGE_DIR": str(tmp_path / "files"),
           "PORTAL_SECRET_KEYS": "test-server-key", "NO_PROXY": "127.0.0.1,localhost"}
    process = subprocess.Popen([sys.executable, "-m", "portal.cli", "serve", "--port", str(port), "--workers", "2"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while len(children(process.pid)) < 2 or not _answers(base_url):
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        time.sleep(1)  # both processes listening, not only the first
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()  # its server processes follow it (they asked the kernel to be told)
            process.wait()


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/api/v1/openapi.json", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def connections_held(pid: int, port: int) -> int:
    """How many TCP connections to `port` process `pid` holds open (its sockets, looked up in /proc/net/tcp)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: established
                inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held += os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes
        except FileNotFoundError:  # closed meanwhile
            pass
    return held


def test_the_connections_are_dealt_evenly_and_sigterm_stops_all(server: tuple[subprocess.Popen[bytes], str]) -> None:
    """Keep-alive connections, as a proxy's pool or a load test opens them, are dealt to the processes in turn:
    16 connections make 8 and 8, every time (the kernel's hash split them anywhere from 8/8 to 5/11)."""
    process, base_url = server
    workers = children(process.pid)
    assert len(workers) == 2
    port = int(base_url.rsplit(":", 1)[1])
    clients = [httpx.Client(base_url=base_url, timeout=10) for _ in range(16)]
    try:
        for client in clients:
            assert client.get("/l/not-a-token").status_code == 404
        assert sorted(connections_held(pid, port) for pid in workers) == [8, 8]
        assert connections_held(process.pid, port) == 0  # the supervisor keeps no copy
    finally:
        for client in clients:
            client.close()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_server_processes_end_with_a_killed_supervisor(server: tuple[subprocess.Popen[bytes], str]) -> None:
    process, _ = server
    workers = children(process.pid)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and b"State:\tZ" not in Path(f"/proc/{pid}/status").read_bytes()
              for pid in workers):
        assert time.monotonic() < deadline, "server processes outlived their supervisor"
        time.sleep(0.1)


def test_a_process_that_dies_stops_the_server(server: tuple[subprocess.Popen[bytes], str]) -> None:
    process, _ = server
    first, second = children(process.pid)
    os.kill(first, signal.SIGKILL)
    assert process.wait(timeout=40) == 1  # the process manager sees it and restarts the whole server
    assert not Path(f"/proc/{second}").exists()
    assert process.stderr is not None and b"a server process ended" in process.stderr.read()


def test_a_port_in_use_is_refused_with_a_clear_message(server: tuple[subprocess.Popen[bytes], str],
                                                       tmp_path: Path) -> None:
    _, base_url = server
    port = base_url.rsplit(":", 1)[1]
    second = subprocess.run([sys.executable, "-m", "portal.cli", "serve", "--port", port, "--workers", "2"],
                            env={**os.environ, "PORTAL_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}",
                                 "PORTAL_SECRET_KEYS": "k"}, capture_output=True, timeout=60)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}".encode() in second.stderr
    assert _answers(base_url)  # the running server is untouched


def test_sigterm_while_the_processes_start_stops_them_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'portal.db'}"
    upgrade(url)
    env = {**os.environ, "PORTAL_DATABASE_URL": url, "PORTAL_SECRET_KEYS": "k"}
    process = subprocess.Popen([sys.executable, "-m", "portal.cli", "serve", "--port", str(free_port()),
                                "--workers", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not children(process.pid):  # the first has started, the others are being started
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.005)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
        assert time.monotonic() - started < 20  # told, not left to the 30 s before the kill
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_after_sigterm_new_connections_are_refused_and_none_is_dropped(
        server: tuple[subprocess.Popen[bytes], str]) -> None:
    """The supervisor stops taking connections before it tells the processes to stop: a client that comes after
    SIGTERM is refused at once (and can try another server), rather than accepted and then reset."""
    process, base_url = server
    process.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/l/not-a-token", timeout=5)
    assert process.wait(timeout=40) == 0


def test_the_dealer_passes_a_full_channel_over_and_drops_nothing() -> None:
    """In one process: connections go round the channels in turn; a channel that is full (its process stopped
    reading) is passed over; when all are full the connection in hand waits, and goes out once there is room."""
    listener = listening_socket("127.0.0.1", 0)
    listener.listen(16)
    listener.setblocking(False)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    for ours, _ in pairs:
        ours.setblocking(False)
    dealer = Dealer(listener, [ours for ours, _ in pairs])
    clients = []

    def connect(count: int) -> None:
        for _ in range(count):
            clients.append(socket.create_connection(listener.getsockname()))
        time.sleep(0.05)  # the handshakes complete in the kernel's backlog

    def received(index: int) -> int:
        theirs, count = pairs[index][1], 0
        theirs.setblocking(False)
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(theirs, 1, 1)
            except BlockingIOError:
                return count
            for fd in fds:
                os.close(fd)
            count += 1

    try:
        connect(4)
        dealer.deal()
        assert (received(0), received(1)) == (2, 2)
        filler = socket.socket()
        with contextlib.suppress(BlockingIOError):
            while True:  # the first process stops reading: fill its channel
                socket.send_fds(pairs[0][0], [b"c"], [filler.fileno()])
        connect(3)
        dealer.deal()
        assert received(1) == 3 and dealer.pending is None  # all went to the process that still reads
        with contextlib.suppress(BlockingIOError):
            while True:
                socket.send_fds(pairs[1][0], [b"c"], [filler.fileno()])
        connect(2)
        dealer.deal()
        assert dealer.pending is not None  # every channel full: held, not dropped, and no more accepted
        assert dealer.watched() == ([], dealer.channels)
        assert received(0) > 200  # room again
        dealer.deal()
        assert dealer.pending is None and received(0) == 2  # the one held, then the one still in the backlog
        assert received(1) > 200  # the fillers: both channels are empty now
        dealer.stopping = True  # as SIGTERM sets it
        connect(1)
        dealer.deal()
        assert (received(0), received(1)) == (0, 0) and dealer.pending is None
    finally:
        dealer.close()
        for client in clients:
            client.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
