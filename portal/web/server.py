"""`portal serve`: gunicorn's arbiter managing uvicorn worker processes (`uvicorn_worker.UvicornWorker`).

Why gunicorn rather than uvicorn's own `--workers` supervisor (both maintained, both restart a worker that dies):

- A worker whose event loop is stuck (blocking work on the loop, a deadlock) is found and replaced. The uvicorn
  worker touches gunicorn's heartbeat from its event loop, so a loop blocked for `worker` seconds gets the worker
  killed and a new one started. uvicorn's supervisor pings its workers from a separate thread, which answers even
  while the loop is stuck.
- The drain on SIGTERM is bounded: the workers finish the requests in flight, and the arbiter kills whatever is
  still running after the graceful timeout. uvicorn's supervisor joins its workers without a deadline.
- Operators know its signals (HUP: replace the workers gracefully, TTIN/TTOU: one worker more or less) and its
  logs.

It is launched through `gunicorn.app.base.BaseApplication`, gunicorn's documented API for custom applications: no
configuration file or GUNICORN_CMD_ARGS is read behind our back, every setting is given here. Each worker imports
the app itself (no preloading): a process's engine, pools and threads are its own.

What each timeout covers (docs/operations.md says the same for operators):
- `keep_alive`: an idle keep-alive connection is closed after it (uvicorn's `timeout_keep_alive`).
- `graceful`: after SIGTERM, in-flight requests get this long (uvicorn's `timeout_graceful_shutdown`); the arbiter
  kills a worker a little later if its lifespan's end hangs (gunicorn's `graceful_timeout`).
- `worker`: a worker whose event loop has not run for this long is replaced (gunicorn's `timeout`).
- Reading a request's headers has no timeout: uvicorn (0.54) arms no timer until a response is complete, and no
  setting of uvicorn or gunicorn's uvicorn worker adds one. A connection that sends nothing, or half a header line,
  is held until the client goes. The reverse proxy in front must enforce it (nginx `client_header_timeout`,
  HAProxy `timeout http-request`, Caddy `timeouts read_header`).

The event loop is asyncio's own, not uvloop: measured earlier on this app, uvloop served a few connections far
later than the rest under load (a page at 32 connections: p99 500 ms against 60 ms, same throughput).
"""

from __future__ import annotations

import dataclasses
import os
import pkgutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

from portal.logs import logging_config

# portal.metrics' variable, spelled here: importing prometheus-client in the arbiter before setting it would
# hand every forked worker the single-process mode.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

APP = "portal.web.asgi:app"
# What every worker's uvicorn gets (uvicorn.Config's arguments). The address a client connected from comes from
# X-Forwarded-For only when the connection comes from an address in FORWARDED_ALLOW_IPS (default: this host).
UVICORN: dict[str, Any] = {"loop": "asyncio", "http": "httptools", "proxy_headers": True, "access_log": False}


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds; see the module's docstring for what each covers."""

    keep_alive: int = 5
    graceful: int = 30
    worker: int = 30


# The arbiter waits this much longer than the workers' own drain before it kills them, so that a worker that
# finished its requests at the deadline still runs its lifespan's end (closing the database pool).
LIFESPAN_END_SECONDS = 5


def serve(host: str, port: int, workers: int, app: Any = APP, *, timeouts: Timeouts = Timeouts(),
          logging: dict[str, Any] | None = None, **options: Any) -> int:
    """Serve `app` (an import string "module:name", or an ASGI app) with `workers` processes until SIGTERM or
    SIGINT; returns the exit status. `options` go to each worker's uvicorn.Config (e.g. `factory=True` when the
    import string names a function that builds the app). bench/ serves its bare ceilings through this too, so
    that they are served exactly like the app."""
    logging = logging or logging_config()
    _share_metrics_between_workers()
    worker_class = type("PortalWorker", (Worker,), {"CONFIG_KWARGS": {
        **UVICORN, "timeout_graceful_shutdown": timeouts.graceful, **options}})
    settings = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "worker_class": worker_class,
        "keepalive": timeouts.keep_alive,
        "graceful_timeout": timeouts.graceful + LIFESPAN_END_SECONDS,
        "timeout": timeouts.worker,
        "proc_name": "portal-web",
        # gunicorn >= 25.1 opens a control socket in $HOME by default; one path for every server on the machine.
        "control_socket_disable": True,
        # Complete (gunicorn merges it over its defaults key by key): our handler, format and filters for
        # gunicorn's, uvicorn's and the app's loggers alike (portal.logs).
        "logconfig_dict": logging,
        # prometheus-client's multiprocess mode: a finished worker's live gauges are dropped.
        "child_exit": _forget_metrics_of,
    }
    try:
        Server(app, settings).run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def _share_metrics_between_workers() -> None:
    """prometheus-client's multiprocess mode (portal.metrics): each worker writes its counters to files in
    PROMETHEUS_MULTIPROC_DIR, and /metrics adds them up. Set before any worker starts (the library reads it when
    imported); a directory the operator gives is emptied of the last run's files, else a new one is made."""
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink()
    else:
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="quittance-metrics-")


def _forget_metrics_of(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class Worker(UvicornWorker):
    """uvicorn_worker's worker (a documented gunicorn worker class, extended through gunicorn's Worker methods)
    with the two duties gunicorn's own workers have and it lacks:

    - It stops on SIGQUIT. The arbiter sends SIGQUIT on SIGINT and on a quick shutdown; UvicornWorker only notes
      it (`handle_exit`), uvicorn never looks, and the arbiter waited out its graceful timeout before killing the
      worker. Now it starts uvicorn's own graceful shutdown, as SIGTERM does.
    - It stops when the arbiter is gone (killed with SIGKILL, say), instead of serving on the port with nobody to
      replace it: checked each time it tells the arbiter it is alive (every `worker / 2` seconds).
    """

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        os.kill(os.getpid(), signal.SIGTERM)

    def notify(self) -> None:
        super().notify()
        if os.getppid() != self.ppid:
            self.log.info("portal serve: the arbiter is gone; stopping worker %s", self.pid)
            os.kill(os.getpid(), signal.SIGTERM)


class Server(BaseApplication):
    """gunicorn with these settings, serving this app."""

    def __init__(self, app: Any, settings: dict[str, Any]) -> None:
        self.target, self.settings = app, settings
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.settings.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        """In each worker: the app, imported there."""
        return pkgutil.resolve_name(self.target) if isinstance(self.target, str) else self.target
