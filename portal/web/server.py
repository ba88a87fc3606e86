"""`portal serve`: uvicorn, in one process or in several.

Several processes each listen on a socket of their own bound to the same address (`SO_REUSEPORT`), so the
kernel spreads new connections evenly between them. uvicorn's own `--workers` shares one listening socket: the
first process to wake up accepts every connection waiting, so a burst of keep-alive connections (a reverse
proxy's pool, a load test) all landed on one process while the other idled (32 connections: the same
throughput with two processes as with one).

The event loop is asyncio's own, not uvloop: under load uvloop served a few connections far later than the
others (a page at 32 connections: p50 57 ms, p99 500 ms; with asyncio's loop p99 60 ms, same throughput).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

import uvicorn

APP = "portal.web.asgi:app"
SETTINGS: dict[str, Any] = {"loop": "asyncio", "proxy_headers": True, "log_level": "info", "access_log": False}
# How long the supervisor waits for its processes to finish their requests after SIGINT/SIGTERM.
STOP_SECONDS = 30


def serve(host: str, port: int, workers: int, app: str = APP, **options: Any) -> int:
    """Serve `app` (an import string; `options` go to uvicorn's Config) until SIGINT or SIGTERM; the exit
    status. bench/ serves its bare ceilings through this too, so that they are served exactly like the app."""
    options = {**SETTINGS, **options}
    if workers <= 1:
        uvicorn.run(app, host=host, port=port, **options)
        return 0
    return _supervise(host, port, workers, app, options)


def listening_socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP,
    # and without it every response waited for a delayed ACK (latency floored at 44 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, app: str, options: dict[str, Any], supervisor: int) -> None:
    _end_with(supervisor)
    sock = listening_socket(host, port)
    uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])


def _supervise(host: str, port: int, workers: int, app: str, options: dict[str, Any]) -> int:
    """Start the processes, pass SIGINT/SIGTERM on to them, and stop them all if one dies: a half-capacity
    server that looks healthy is worse than one the process manager restarts."""
    # Bound here first, without SO_REUSEPORT, so that a port already taken (by another server started the same
    # way too, which would otherwise share it silently) fails at once with one clear message.
    try:
        listening_socket(host, port, shared=False).close()
    except OSError as exc:
        print(f"portal serve: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(host, port, app, options, os.getpid()),
                                 name=f"portal-web-{n}") for n in range(workers)]
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # SIGTERM is uvicorn's graceful shutdown (finish the requests in flight, then the lifespan's end), like
        # SIGINT, but without the KeyboardInterrupt traceback that uvicorn re-raises after a SIGINT.
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for process in processes:
        process.start()
    if stopping:  # a signal came while they were starting: tell the ones started after it too
        stop(signal.SIGTERM, None)
    print(f"portal serve: {workers} processes on http://{host}:{port} (pids "
          f"{', '.join(str(p.pid) for p in processes)})", file=sys.stderr, flush=True)
    while not stopping and all(process.is_alive() for process in processes):
        time.sleep(0.2)
    failed = not stopping
    if failed:
        print("portal serve: a server process ended; stopping the others", file=sys.stderr, flush=True)
        stop(signal.SIGTERM, None)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
    return 1 if failed else 0


def _end_with(supervisor: int) -> None:
    """Have the kernel send this process SIGTERM when the supervisor ends, however it ends (kill -9 included),
    so that no server process is left listening on the port without a supervisor."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor:  # it ended before the line above
        sys.exit(0)
