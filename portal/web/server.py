"""`portal serve`: uvicorn, in one process or in several.

With several processes, the supervisor alone listens. It accepts each connection and hands it to the next
process in turn, passing the socket over a Unix socket pair (SCM_RIGHTS), as Node's cluster module does by
default; each process then serves that connection for as long as it stays open. Two ways of sharing that were
measured and dropped:

- uvicorn's own `--workers` shares one listening socket, and the first process to wake up accepts every
  connection waiting: a burst of keep-alive connections (a reverse proxy's pool, a load test) all landed on one
  process while the other idled.
- A listening socket per process (`SO_REUSEPORT`) lets the kernel choose by a hash of the addresses: 32
  connections were split anywhere from 16/16 to 11/21, and the busier process's requests waited in proportion
  (history page p99 38-40 ms in three rounds of four at 15/17, 50-61 ms at 14/18).

The event loop is asyncio's own, not uvloop: under load uvloop served a few connections far later than the
others (a page at 32 connections: p50 57 ms, p99 500 ms; with asyncio's loop p99 60 ms, same throughput).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

import uvicorn

logger = logging.getLogger("uvicorn.error")
APP = "portal.web.asgi:app"
SETTINGS: dict[str, Any] = {"loop": "asyncio", "proxy_headers": True, "log_level": "info", "access_log": False}
# How long the supervisor waits for its processes to finish their requests after SIGINT/SIGTERM.
STOP_SECONDS = 30
# Connections the kernel keeps waiting for the supervisor to accept (uvicorn's own default).
BACKLOG = 2048
# What a server process sends its supervisor once its app has started and it takes connections.
READY = b"r"


def serve(host: str, port: int, workers: int, app: str = APP, **options: Any) -> int:
    """Serve `app` (an import string; `options` go to uvicorn's Config) until SIGINT or SIGTERM; the exit
    status. bench/ serves its bare ceilings through this too, so that they are served exactly like the app."""
    options = {**SETTINGS, **options}
    if workers <= 1:
        uvicorn.run(app, host=host, port=port, **options)
        return 0
    return _supervise(host, port, workers, app, options)


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class _HandedServer(uvicorn.Server):
    """uvicorn serving the connections its supervisor hands it over `channel`, with no listening socket."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel
        self.seating: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the app's lifespan, and no listener of its own
        # What uvicorn's startup gives create_server for each listener.
        protocol = functools.partial(self.config.http_protocol_class, config=self.config,
                                     server_state=self.server_state, app_state=self.lifespan.state)
        self.channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self._take, protocol)
        self.channel.send(READY)

    def _take(self, protocol: Any) -> None:
        """Every connection waiting on the channel, into the event loop as uvicorn's own would be."""
        loop = asyncio.get_running_loop()
        for connection in self._waiting():
            task = loop.create_task(self._seat(protocol, connection))
            self.seating.add(task)
            task.add_done_callback(self.seating.discard)

    def _waiting(self) -> list[socket.socket]:
        """The connections the channel holds. When it ends (the supervisor is stopping, or gone) or fails, the
        process stops."""
        taken = []
        while True:
            try:
                message, fds, flags, _address = socket.recv_fds(self.channel, 1, 1)
            except BlockingIOError:
                return taken
            except OSError as exc:
                logger.error("portal serve: the supervisor's channel failed (%s); stopping", exc)
                message, fds, flags = b"", [], 0
            if flags & socket.MSG_CTRUNC:
                logger.error("portal serve: a connection was lost on its way here (out of file descriptors?)")
            if not message:
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
                self.should_exit = True
                return taken
            # Built from its descriptor, the socket reports the kernel's own protocol (TCP), so asyncio turns Nagle
            # off for it; without that every response waited for a delayed ACK (latency floored at 44 ms).
            taken.extend(socket.socket(fileno=fd) for fd in fds)

    async def _seat(self, protocol: Any, connection: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(protocol, connection, ssl=self.config.ssl)
        except OSError:  # the client left before we got to it
            connection.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # The supervisor stopped dealing before it told us to stop; anything still in the channel came just before.
        for connection in self._waiting():
            connection.close()
        asyncio.get_running_loop().remove_reader(self.channel.fileno())
        await super().shutdown(sockets)


def _worker(app: str, options: dict[str, Any], supervisor: int, channel: socket.socket) -> None:
    _end_with(supervisor)
    _HandedServer(uvicorn.Config(app, **options), channel).run()


class Dealer:
    """The supervisor's side: accepts connections and hands each to the next process in turn.

    A process whose channel is full (some 280 connections it has not read: it is stuck) is passed over. When every
    channel is full, the connection in hand waits (`pending`) and no more are accepted until a channel has room:
    the others wait in the kernel's backlog, and nothing is dropped."""

    def __init__(self, listener: socket.socket, channels: list[socket.socket]) -> None:
        self.listener, self.channels = listener, channels
        self.turn = 0
        self.pending: socket.socket | None = None
        self.stopping = False  # set by the signal handler: no connection is handed out after it

    def watched(self) -> tuple[list[socket.socket], list[socket.socket]]:
        """What to wait for: a connection to accept, or room in a channel for the one in hand."""
        return ([], self.channels) if self.pending else ([self.listener], [])

    def deal(self, most: int = 256) -> None:
        """Accept and hand out the connections waiting, up to `most` (then the supervisor looks at its processes)."""
        for _ in range(most):
            if self.stopping:
                return
            if self.pending is None:
                try:
                    self.pending, _ = self.listener.accept()
                except OSError:  # none waiting; or the client left already, or we are out of descriptors
                    return
            if not self._hand(self.pending):
                return
            self.pending.close()  # the process it went to has its own copy
            self.pending = None

    def _hand(self, connection: socket.socket) -> bool:
        for attempt in range(len(self.channels)):
            index = (self.turn + attempt) % len(self.channels)
            try:
                socket.send_fds(self.channels[index], [b"c"], [connection.fileno()])
            except BlockingIOError:
                continue  # full
            except OSError as exc:  # its process ended (the supervisor notices), or the kernel refused
                print(f"portal serve: cannot hand a connection to process {index + 1}: {exc}", file=sys.stderr,
                      flush=True)
                continue
            self.turn = (index + 1) % len(self.channels)
            return True
        return False

    def close(self) -> None:
        """Refuse new connections from now on (and drop the one in hand, if any)."""
        if self.pending is not None:
            self.pending.close()
        self.listener.close()


def _supervise(host: str, port: int, workers: int, app: str, options: dict[str, Any]) -> int:
    """Start the processes, deal them the connections, pass SIGINT/SIGTERM on to them, and stop them all if one
    dies: a half-capacity server that looks healthy is worse than one the process manager restarts."""
    try:
        listener = listening_socket(host, port)
    except OSError as exc:
        print(f"portal serve: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    # SOCK_SEQPACKET: one message per connection, so a socket never arrives glued to another message.
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(workers)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(app, options, os.getpid(), theirs),
                                 name=f"portal-web-{n}") for n, (_, theirs) in enumerate(pairs)]
    channels = [ours for ours, _ in pairs]
    dealer = Dealer(listener, channels)
    wake, waker = socket.socketpair()  # a byte on it wakes the loop below from its select
    waker.setblocking(False)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # Only noted here: the loop below stops taking connections first, and then tells the processes.
        dealer.stopping = True
        with contextlib.suppress(BlockingIOError):
            waker.send(b"s")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for process in processes:
        process.start()
    for _, theirs in pairs:
        theirs.close()
    listener.setblocking(False)
    for channel in channels:
        channel.setblocking(False)
    # Connections are taken only once every process has started its app: none waits on a process still starting.
    starting, checked = set(channels), time.monotonic()
    while not dealer.stopping:
        reading, writing = (list(starting), []) if starting else dealer.watched()
        readable, writable, _ = select.select([*reading, wake], writing, [], 0.2)
        if starting:
            for channel in readable:
                if channel is not wake and channel.recv(1) == READY:
                    starting.discard(channel)
            if not starting:
                listener.listen(BACKLOG)
                print(f"portal serve: {workers} processes on http://{host}:{port} (pids "
                      f"{', '.join(str(p.pid) for p in processes)})", file=sys.stderr, flush=True)
        elif listener in readable or writable:
            dealer.deal()
        if time.monotonic() - checked >= 0.2:
            if not all(process.is_alive() for process in processes):
                break
            checked = time.monotonic()
    dealer.close()
    failed = not dealer.stopping
    if failed:
        print("portal serve: a server process ended; stopping the others", file=sys.stderr, flush=True)
    # SIGTERM is uvicorn's graceful shutdown (finish the requests in flight, then the lifespan's end), like SIGINT,
    # but without the KeyboardInterrupt traceback that uvicorn re-raises after a SIGINT.
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
    for channel in (*channels, wake, waker):
        channel.close()
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
