"""Memory and time of a bulk PDF import over HTTP, against a bare zipfile extraction.

    .venv/bin/python bench/archive_memory.py                 # 1,000 PDFs
    .venv/bin/python bench/archive_memory.py --count 3000 --pdf-kb 40

A fresh SQLite database and storage directory; `portal db upgrade`, `portal org create`, `portal apikey
create`; `portal serve` as a subprocess; one customer and `--count` invoices pushed with
POST /api/v1/invoices/batch. Then, while a thread samples the server's resident memory (psutil):

1. the archive of `--count` unique PDFs is posted to /api/v1/invoice-document-archives (all "stored");
2. the same archive again (all "unchanged": read and screened, nothing written);
3. a zip bomb (1 MB that inflates to 1 GiB) that must be refused with 413.

For each: seconds, and the peak resident memory above what the server held just before the request. The
target is under 100 MB of growth for the import. The ceiling is the same archive extracted in this process
with bare zipfile + write (no checks, no hashing, no database): the ratio says how much of that speed the
checked, transactional import keeps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.documents import bomb_entry, make_pdf, raw_zip  # noqa: E402

MB = 1024 * 1024
TARGET_GROWTH_MB = 100
ARCHIVES = "/api/v1/invoice-document-archives"


def external_id(n: int) -> str:
    return f"BENCH-{n:05d}"


def build_archive(path: Path, count: int, pdf_kb: int) -> int:
    """`count` unique PDFs of about `pdf_kb` kB each (text lines that differ per invoice), deflated."""
    lines = max(1, pdf_kb * 1024 // 60)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(count):
            text = ") Tj T* (".join(f"Line {i} of invoice {external_id(n)}: consulting, 2 h x 95.00 EUR"
                                    for i in range(lines))
            archive.writestr(f"{external_id(n)}.pdf", make_pdf(text))
    return path.stat().st_size


class Sampler:
    """The peak resident memory of a process while the block runs, sampled every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.003)

    @contextmanager
    def measuring(self) -> Iterator[Sampler]:
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / MB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`portal` commands and `portal serve` on one SQLite file and one storage directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "PORTAL_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
                    "PORTAL_STORAGE_DIR": str(workdir / "documents"), "NO_PROXY": "127.0.0.1,localhost"}
        self.portal = str(Path(sys.executable).parent / "portal")

    def run(self, *args: str) -> str:
        done = subprocess.run([self.portal, *args], env=self.env, cwd=self.workdir, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"portal {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    @contextmanager
    def serve(self) -> Iterator[tuple[str, int]]:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with open(self.workdir / "server.log", "wb") as log:
            process = subprocess.Popen([self.portal, "serve", "--port", str(port)],
                                       env={**self.env, "PORTAL_BASE_URL": base_url}, cwd=self.workdir,
                                       stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 30
                while True:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((self.workdir / "server.log").read_text(errors="replace"))
                    try:
                        if httpx.get(f"{base_url}/api/v1/openapi.json", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                yield base_url, process.pid
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def push_invoices(client: httpx.Client, count: int) -> None:
    response = client.put("/api/v1/customers/C1", json={"name": "Bench customer", "locale": "en"})
    response.raise_for_status()
    for start in range(0, count, 1000):
        batch = [{"external_id": external_id(n), "customer": "C1", "number": f"2026-{n:05d}", "status": "open",
                  "issue_date": "2026-11-01", "due_date": "2026-12-01", "currency": "EUR", "total": "190.00"}
                 for n in range(start, min(count, start + 1000))]
        response = client.post("/api/v1/invoices/batch", json={"invoices": batch})
        response.raise_for_status()
        assert response.json()["failed"] == 0, response.text


def post_file(client: httpx.Client, sampler: Sampler, path: Path) -> tuple[float, httpx.Response]:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as file:
            while chunk := file.read(256 * 1024):
                yield chunk

    headers = {"Content-Type": "application/zip", "Content-Length": str(path.stat().st_size)}
    with sampler.measuring():
        started = time.perf_counter()
        response = client.post(ARCHIVES, content=chunks(), headers=headers)
        elapsed = time.perf_counter() - started
    return elapsed, response


def bare_extraction(archive: Path, target: Path, *, durable: bool) -> float:
    """The ceiling: every entry inflated and written to its own file, nothing checked or recorded; with
    `durable`, each file and its directory also fsynced, as the store does before the database points at
    it (that cost is the price of "a crash leaves the old or the new file")."""
    target.mkdir()
    started = time.perf_counter()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            with zf.open(info) as source, (target / info.filename).open("wb") as sink:
                shutil.copyfileobj(source, sink, 64 * 1024)
                if durable:
                    sink.flush()
                    os.fsync(sink.fileno())
            if durable:
                directory = os.open(target, os.O_RDONLY)
                os.fsync(directory)
                os.close(directory)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="PDFs in the archive (and invoices)")
    parser.add_argument("--pdf-kb", type=int, default=8, help="approximate size of each PDF")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        workdir = Path(tmp)
        archive = workdir / "invoices.zip"
        archive_bytes = build_archive(archive, args.count, args.pdf_kb)
        bomb = workdir / "bomb.zip"
        bomb.write_bytes(raw_zip([bomb_entry(f"{external_id(0)}.pdf", 1024)]))
        # The same bomb with headers that claim 1,000 bytes, and one that admits its 20 MiB (within the cap).
        hiding = workdir / "hiding.zip"
        hiding.write_bytes(raw_zip([bomb_entry(f"{external_id(0)}.pdf", 1024, declared=1000)]))
        ratio = workdir / "ratio.zip"
        ratio.write_bytes(raw_zip([bomb_entry(f"{external_id(0)}.pdf", 20)]))
        with zipfile.ZipFile(archive) as zf:
            inflated = sum(info.file_size for info in zf.infolist())
        print(f"archive: {args.count} PDFs, {inflated / MB:.1f} MB inflated, {archive_bytes / MB:.1f} MB "
              f"compressed; bomb: {bomb.stat().st_size / MB:.1f} MB -> 1024 MB")

        server = Server(workdir)
        server.run("db", "upgrade")
        server.run("org", "create", "bench", "--name", "Bench")
        key = server.run("apikey", "create", "bench", "--name", "bench").strip().splitlines()[-1]
        with server.serve() as (base_url, pid), httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
            push_invoices(client, args.count)
            # Warm up the code paths (imports, first connection) so the baseline holds them.
            warm = workdir / "warm.zip"
            with zipfile.ZipFile(warm, "w") as zf:
                zf.writestr("UNKNOWN.pdf", make_pdf())
            post_file(client, Sampler(pid), warm)

            results: list[tuple[str, float, Sampler, Any]] = []
            for label, path, expect in (("import", archive, 200), ("resend (unchanged)", archive, 200),
                                        ("bomb, admits 1 GiB", bomb, 413), ("bomb, claims 1 kB", hiding, 422),
                                        ("bomb, 20 MiB at 1000:1", ratio, 413)):
                sampler = Sampler(pid)
                elapsed, response = post_file(client, sampler, path)
                assert response.status_code == expect, response.text[:500]
                results.append((label, elapsed, sampler, response.json()))
            imported, resent = results[0][3], results[1][3]
            assert imported["stored"] == args.count, imported
            assert resent["unchanged"] == args.count, resent

        ceiling = bare_extraction(archive, workdir / "bare", durable=False)
        durable = bare_extraction(archive, workdir / "bare-fsync", durable=True)
        print(f"{'scenario':<24} {'seconds':>8} {'PDFs/s':>8} {'peak RSS growth':>16}")
        for label, elapsed, sampler, _ in results:
            rate = f"{args.count / elapsed:8.0f}" if not label.startswith("bomb") else f"{'-':>8}"
            print(f"{label:<24} {elapsed:8.3f} {rate} {sampler.growth_mb:13.1f} MB")
        for label, seconds in (("bare zipfile+write", ceiling), ("bare ... + fsync", durable)):
            print(f"{label:<24} {seconds:8.3f} {args.count / seconds:8.0f} {'(in-process)':>16}")
        import_seconds, growth = results[0][1], results[0][2].growth_mb
        print(f"import: {ceiling / import_seconds:.0%} of bare zipfile+write's speed, "
              f"{durable / import_seconds:.0%} of it with fsync; peak growth {growth:.1f} MB "
              f"(target < {TARGET_GROWTH_MB} MB: {'met' if growth < TARGET_GROWTH_MB else 'MISSED'})")


if __name__ == "__main__":
    main()
