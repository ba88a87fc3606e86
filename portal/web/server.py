"""`portal serve`: uvicorn, in one process or in several.

Several processes share one listening socket, and each takes a new connection only while it holds no more
connections than the least loaded of them (`_FairServer`). Long-lived keep-alive connections (a reverse proxy's
pool, a load test) thus end up evenly spread, and so does the work: requests on a process's connections wait for
that process, so a process holding 20 of 32 connections made its requests wait 1.7 times longer than the other
process's. The two other ways did not spread them evenly: uvicorn's own `--workers`, where the first process to
wake up accepts every connection waiting (32 connections: one process took them all), and a socket per process
(`SO_REUSEPORT`), where the kernel picks one by a hash of the addresses (splits of 32 from 16/16 to 11/21).

The event loop is asyncio's own, not uvloop: under load uvloop served a few connections far later than the
others (a page at 32 connections: p50 57 ms, p99 500 ms; with asyncio's loop p99 60 ms, same throughput).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("uvicorn.error")

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


BACKLOG = 2048  # uvicorn's default
# How long a process that holds more connections than another waits before taking a new one anyway: the other
# takes it first unless its event loop is busy for longer than this.
DEFER_SECONDS = 0.002


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP,
    # and without it every response waited for a delayed ACK (latency floored at 44 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


class _Connections(set[Any]):
    """uvicorn's set of this process's open connections, which also keeps the process's count in `loads`."""

    def __init__(self, loads: Sequence[int], index: int) -> None:
        super().__init__()
        self.loads, self.index = loads, index

    def add(self, connection: Any) -> None:
        super().add(connection)
        self.loads[self.index] = len(self)  # type: ignore[index]

    def discard(self, connection: Any) -> None:
        super().discard(connection)
        self.loads[self.index] = len(self)  # type: ignore[index]


class _FairServer(uvicorn.Server):
    """uvicorn's server, taking connections from the listening socket that every process shares, first when it
    holds no more of them than any other process (`loads`: each process's count, in shared memory)."""

    def __init__(self, config: uvicorn.Config, listener: socket.socket, loads: Sequence[int], index: int) -> None:
        super().__init__(config)
        self.listener, self.loads = listener, loads
        self.server_state.connections = _Connections(loads, index)
        self.accepting: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan, and no asyncio server: connections are taken below
        self.accepting = asyncio.create_task(self._accept())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.accepting is not None:
            self.accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.accepting
        self.listener.close()
        await super().shutdown(sockets)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        config, held = self.config, self.server_state.connections

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop)

        self.listener.setblocking(False)
        while True:
            await _readable(loop, self.listener)
            if len(held) > min(self.loads):
                await asyncio.sleep(DEFER_SECONDS)  # a process holding fewer takes it, if it can
            try:
                connection, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # another process took it, or the client gave up
            except OSError as exc:  # out of file descriptors, say: let connections close, then go on
                log.error("cannot accept a connection: %s", exc)
                await asyncio.sleep(0.5)
                continue
            await loop.connect_accepted_socket(protocol, connection)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def _worker(listener: socket.socket, loads: Sequence[int], index: int, app: str, options: dict[str, Any],
            supervisor: int) -> None:
    _end_with(supervisor)
    _FairServer(uvicorn.Config(app, **options), listener, loads, index).run()


def _supervise(host: str, port: int, workers: int, app: str, options: dict[str, Any]) -> int:
    """Start the processes, pass SIGINT/SIGTERM on to them, and stop them all if one dies: a half-capacity
    server that looks healthy is worse than one the process manager restarts."""
    try:
        listener = listening_socket(host, port)
    except OSError as exc:
        print(f"portal serve: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    context = multiprocessing.get_context("spawn")
    loads = context.Array("i", workers, lock=False)  # each process writes its own count only
    processes = [context.Process(target=_worker, args=(listener, loads, n, app, options, os.getpid()),
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
    listener.close()  # each process has its own copy
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
