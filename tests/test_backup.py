"""`portal db backup PATH`: a consistent copy of a live SQLite database, taken while invoices are being written,
that serves the same API answers and debtor pages once restored into a fresh directory."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from portal.app import create_app
from portal.cli import main
from portal.settings import Settings
from tests.conftest import invoice_body
from tests.support.documents import make_pdf


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    live = tmp_path / "live"
    live.mkdir()
    monkeypatch.setenv("PORTAL_DATABASE_URL", f"sqlite:///{live / 'quittance.db'}")
    monkeypatch.setenv("PORTAL_STORAGE_DIR", str(live / "documents"))
    monkeypatch.chdir(tmp_path)
    return live


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def app_on(directory: Path) -> TestClient:
    settings = Settings(database_url=f"sqlite:///{directory / 'quittance.db'}", storage_dir=directory / "documents",
                        base_url="http://testserver")
    return TestClient(create_app(settings), follow_redirects=False)


def test_a_backup_under_writes_restores_to_the_same_pages_and_answers(env: Path, tmp_path: Path) -> None:
    cli("db", "upgrade")
    cli("org", "create", "acme", "--name", "Acme")
    key = cli("apikey", "create", "acme", "--name", "ERP").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    with app_on(env) as live:
        live.headers.update(headers)
        for customer in ("C1", "C2"):
            assert live.put(f"/api/v1/customers/{customer}", json={"name": customer, "locale": "en"}).is_success
        for n in range(1, 6):
            put = live.put(f"/api/v1/invoices/INV-{n}", json=invoice_body(number=f"2026-{n:04d}"))
            assert put.status_code == 201, put.text
        pdf = live.put("/api/v1/invoices/INV-1/document", content=make_pdf("Invoice 2026-0001"),
                       headers={"Content-Type": "application/pdf"})
        assert pdf.is_success, pdf.text
        token = cli("link", "create", "acme", "C1").strip().rsplit("/", 1)[1]

        # Another customer's invoices keep arriving while the backup is taken.
        stop = threading.Event()
        written: list[int] = []

        def keep_writing() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                response = live.put(f"/api/v1/invoices/W-{n}", json=invoice_body(customer="C2", number=f"W-{n}"))
                written.append(response.status_code)

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            while len(written) < 20:
                stop.wait(0.01)
            output = cli("db", "backup", str(tmp_path / "quittance-backup.db"))
            during = len(written)
            while len(written) < during + 20:
                stop.wait(0.01)
        finally:
            stop.set()
            writer.join()
        assert set(written) == {201}, "writes went on, unhindered, during the backup"
        assert "backed up to" in output

        restored = tmp_path / "restored"
        restored.mkdir()
        shutil.copy(tmp_path / "quittance-backup.db", restored / "quittance.db")
        shutil.copytree(env / "documents", restored / "documents")

        with app_on(restored) as copy:
            copy.headers.update(headers)
            for path in ["/api/v1/customers/C1", *(f"/api/v1/invoices/INV-{n}" for n in range(1, 6)),
                         "/api/v1/invoices?customer=C1", "/api/v1/invoices/INV-1/document"]:
                original, answer = live.get(path), copy.get(path)
                assert answer.status_code == original.status_code == 200, path
                assert answer.content == original.content, path
            backed_up = copy.get("/api/v1/invoices?customer=C2&limit=1000").json()["items"]
            assert 20 <= len(backed_up) < len(written), "the copy holds one consistent moment of the writes"

            for browser in (live, copy):
                browser.headers.pop("Authorization")
                assert browser.get(f"/l/{token}").status_code == 303
            page, restored_page = live.get("/portal"), copy.get("/portal")
            assert restored_page.status_code == 200
            # The same invoices, amounts and statuses, in the same order (only the session's CSRF token differs).
            shown = re.compile(r"2026-\d{4}|€\s?[\d.,]+|[\d.,]+\s?€")
            assert shown.findall(restored_page.text) == shown.findall(page.text)
            assert "2026-0005" in restored_page.text


def test_a_backup_never_overwrites_and_leaves_nothing_half_written(env: Path, tmp_path: Path) -> None:
    cli("db", "upgrade")
    existing = tmp_path / "taken.db"
    existing.write_bytes(b"an older backup")
    result = CliRunner().invoke(main, ["db", "backup", str(existing)])
    assert result.exit_code == 1
    assert "exists already" in result.output
    assert existing.read_bytes() == b"an older backup"

    result = CliRunner().invoke(main, ["db", "backup", str(tmp_path / "no-such-dir" / "b.db")])
    assert result.exit_code == 1 and "is not a directory" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "taken.db"]


def test_postgresql_is_pointed_to_pg_dump(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PORTAL_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(main, ["db", "backup", str(tmp_path / "b.db")])
    assert result.exit_code == 1
    assert "pg_dump" in result.output
