"""The debtor's zip of PDFs (GET /portal/download): each PDF once, within the download limits with a clear
page beyond them, and streamed as it is built, chunk by chunk, off the event loop."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.responses import StreamingResponse

from portal.app import create_app
from portal.settings import Limits
from portal.storage import LocalStore
from portal.web.portal import zip_download
from tests.conftest import Tenant
from tests.support.documents import make_pdf
from tests.web.test_portal import Debtor, invoice_id, link_for

KB = 1024


def attach(tenant: Tenant, external_id: str, pdf: bytes) -> None:
    response = tenant.client.put(f"/api/v1/invoices/{external_id}/document", content=pdf,
                                 headers={"content-type": "application/pdf"})
    assert response.status_code in (200, 201), response.text


@pytest.fixture
def three_pdfs(tenant: Tenant) -> dict[str, bytes]:
    pdfs = {}
    for n in (1, 2, 3):
        external_id = f"INV-{n}"
        assert tenant.put_invoice(external_id, number=f"F-00{n}").status_code == 201
        pdfs[external_id] = make_pdf(f"Invoice {n}", padding=300 * KB)  # 300 KiB each: more than one chunk
        attach(tenant, external_id, pdfs[external_id])
    return pdfs


def debtor_of(app: Any, tenant: Tenant) -> Debtor:
    visitor = Debtor(app)
    visitor.open(link_for(tenant))
    return visitor


def query(database: Any, *external_ids: str, times: int = 1) -> list[tuple[str, str]]:
    return [("invoice", str(invoice_id(database, e))) for e in external_ids] * times


def test_an_id_repeated_100_times_gives_one_entry(app: Any, tenant: Tenant, database: Any,
                                                  three_pdfs: dict[str, bytes]) -> None:
    response = debtor_of(app, tenant).get("/portal/download", params=query(database, "INV-1", times=100))
    assert response.status_code == 200
    assert len(response.content) < 2 * len(three_pdfs["INV-1"]), "one copy, not a hundred"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["F-001.pdf"]
        assert archive.read("F-001.pdf") == three_pdfs["INV-1"]
        assert archive.testzip() is None


def test_several_pdfs_stream_without_a_length(app: Any, tenant: Tenant, database: Any,
                                              three_pdfs: dict[str, bytes]) -> None:
    response = debtor_of(app, tenant).get("/portal/download", params=query(database, "INV-1", "INV-2", "INV-3"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert "content-length" not in response.headers, "streamed as it is built, not written out first"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == {
            f"F-00{n}.pdf": three_pdfs[f"INV-{n}"] for n in (1, 2, 3)}


@pytest.fixture
def small_limits_app(settings: Any, database: Any, clock: Any) -> Any:
    limits = Limits(download_files=2, download_bytes=700 * KB)
    return create_app(replace(settings, limits=limits), clock=clock, database=database)


def test_more_files_than_one_download_holds_gets_a_clear_page(small_limits_app: Any, tenant: Tenant, database: Any,
                                                              three_pdfs: dict[str, bytes]) -> None:
    debtor = debtor_of(small_limits_app, tenant)
    response = debtor.get("/portal/download", params=query(database, "INV-1", "INV-2", "INV-3"))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    # The customer writes French (fr-BE): the page is in French.
    assert "Un téléchargement contient au plus 2 PDF" in response.text
    assert 'href="/portal"' in response.text
    # Repeats count once: the same two invoices, each named many times, fit.
    fits = debtor.get("/portal/download", params=query(database, "INV-1", "INV-2", times=50))
    assert fits.status_code == 200
    with zipfile.ZipFile(io.BytesIO(fits.content)) as archive:
        assert sorted(archive.namelist()) == ["F-001.pdf", "F-002.pdf"]


def test_the_default_count_limit(app: Any, tenant: Tenant, three_pdfs: dict[str, bytes]) -> None:
    ids = [("invoice", str(n)) for n in range(1, 102)]  # 101 distinct ids
    response = debtor_of(app, tenant).get("/portal/download", params=ids)
    assert response.status_code == 422 and "100" in response.text


def test_more_bytes_than_one_download_holds_gets_a_clear_page(small_limits_app: Any, tenant: Tenant,
                                                              database: Any, three_pdfs: dict[str, bytes]) -> None:
    tenant.client.put("/api/v1/invoices/INV-2/document", content=make_pdf("big", padding=500 * KB),
                      headers={"content-type": "application/pdf"})
    response = debtor_of(small_limits_app, tenant).get("/portal/download", params=query(database, "INV-1", "INV-2"))
    assert response.status_code == 422
    assert "(700 Ko)" not in response.text and "Veuillez sélectionner moins de factures" in response.text


def test_the_handler_streams_the_archive_chunk_by_chunk(app: Any, tenant: Tenant, database: Any,
                                                        three_pdfs: dict[str, bytes],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler's own response: a StreamingResponse over an async iterator, whose chunks (each about
    zip_download.CHUNK) reach the server one after the other; never an archive written out first."""
    from portal.web.portal import pages

    made: list[Any] = []
    sizes: list[int] = []

    def keep(*args: Any, **kwargs: Any) -> Any:
        response = pages_attachment(*args, **kwargs)
        made.append(response)
        inner = response.body_iterator

        async def measured() -> Any:
            async for block in inner:
                sizes.append(len(block))
                yield block

        response.body_iterator = measured()
        return response

    pages_attachment = pages.attachment
    monkeypatch.setattr(pages, "attachment", keep)
    response = debtor_of(app, tenant).get("/portal/download", params=query(database, "INV-1", "INV-2", "INV-3"))
    assert response.status_code == 200
    assert isinstance(made[0], StreamingResponse)
    assert len(sizes) >= 4 and max(sizes) <= zip_download.CHUNK + 200, sizes
    assert sum(sizes) == len(response.content)


def stored(store: LocalStore, data: bytes) -> str:
    file, path = store.temporary_file()
    with file:
        file.write(data)
    return store.store_file(path).sha256


def test_chunks_are_made_one_at_a_time_in_bounded_memory(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "documents")
    first = stored(store, b"1" * (200 * KB))
    second = hashlib.sha256(b"2" * (200 * KB)).hexdigest()
    chunks = zip_download.zip_chunks(store, [("a.pdf", first), ("b.pdf", second)], chunk=64 * KB)
    made = [next(chunks)]
    # Nothing of the second document was read yet: it is not even stored.
    assert stored(store, b"2" * (200 * KB)) == second
    made += list(chunks)
    assert len(made) >= 6
    assert max(len(c) for c in made) <= 64 * KB + 200, "one chunk in memory at a time, whatever the size"
    with zipfile.ZipFile(io.BytesIO(b"".join(made))) as archive:
        assert archive.read("a.pdf") == b"1" * (200 * KB) and archive.read("b.pdf") == b"2" * (200 * KB)
        assert archive.testzip() is None


def test_chunks_are_made_off_the_event_loop(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "documents")
    document = stored(store, b"x" * (300 * KB))
    threads: set[int] = set()

    def recorded() -> Any:
        for block in zip_download.zip_chunks(store, [("doc.pdf", document)], chunk=64 * KB):
            threads.add(threading.get_ident())
            yield block

    async def consume() -> tuple[int, bytes]:
        loop_thread = threading.get_ident()
        body = b"".join([block async for block in zip_download.in_threads(recorded())])
        return loop_thread, body

    loop_thread, body = anyio.run(consume)
    assert threads and loop_thread not in threads
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.read("doc.pdf") == b"x" * (300 * KB)


def test_chunk_boundaries_between_entries(tmp_path: Path) -> None:
    """Files of every size around the chunk, so that headers land on a chunk's edge: each chunk stays within
    one chunk and one entry's headers, and the archive is whole."""
    store = LocalStore(tmp_path / "documents")
    files = [(f"{n}.pdf", stored(store, bytes([n]) * size))
             for n, size in enumerate((0, 1, 4000, 4095, 4096, 4097, 8192, 10_000))]
    made = list(zip_download.zip_chunks(store, files, chunk=4096))
    assert max(len(c) for c in made) <= 4096 + 200
    with zipfile.ZipFile(io.BytesIO(b"".join(made))) as archive:
        assert archive.testzip() is None
        assert [len(archive.read(name)) for name, _ in files] == [0, 1, 4000, 4095, 4096, 4097, 8192, 10_000]
