"""Invoice PDFs over HTTP: upload, replace and download one; import many as a zip archive. Every refusal
is checked for what a billing system would notice: the status, the reason, and that nothing was stored."""

from __future__ import annotations

import dataclasses
import hashlib
import stat
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from portal.app import create_app
from portal.clock import FrozenClock
from portal.db import Database
from portal.settings import Limits, Settings
from tests.conftest import Tenant
from tests.support.documents import (
    RawEntry, bomb_entry, make_pdf, make_zip, object_stream, raw_zip, rename_entry, snapshot,
)

PDF = {"Content-Type": "application/pdf"}
ZIP = {"Content-Type": "application/zip"}
ARCHIVES = "/api/v1/invoice-document-archives"


def document_url(external_id: str) -> str:
    return f"/api/v1/invoices/{external_id}/document"


@pytest.fixture
def invoices(tenant: Tenant) -> Tenant:
    for n in (1, 2, 3):
        assert tenant.put_invoice(f"INV-{n}", number=f"2026-000{n}").status_code == 201
    return tenant


def with_limits(tenant: Tenant, settings: Settings, database: Database, clock: FrozenClock,
                **limits: int) -> TestClient:
    """A client for an app like the tenant's but with other limits (same database, same storage)."""
    changed = dataclasses.replace(settings, limits=Limits(**limits))
    app = create_app(changed, clock=clock, database=database)
    return TestClient(app, headers={"Authorization": f"Bearer {tenant.key}"}, raise_server_exceptions=False)


def invoice(tenant: Tenant, external_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/api/v1/invoices/{external_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def documented(tenant: Tenant) -> list[str]:
    """External ids of the invoices that have a PDF."""
    response = tenant.client.get("/api/v1/invoices", params={"has_document": "true"})
    return [item["external_id"] for item in response.json()["items"]]


# --- One PDF ----------------------------------------------------------------------------------------------


def test_upload_then_download_gives_the_same_bytes_with_safe_headers(invoices: Tenant) -> None:
    pdf = make_pdf("Invoice 2026-0001")
    put = invoices.client.put(document_url("INV-1"), content=pdf, headers=PDF)
    assert put.status_code == 201, put.text
    body = put.json()
    assert body["result"] == "created"
    assert body["invoice"]["has_document"] is True
    document = body["invoice"]["document"]
    assert document["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert document["size"] == len(pdf)
    assert document["url"] == "http://testserver/api/v1/invoices/INV-1/document"

    got = invoices.client.get(document_url("INV-1"))
    assert got.status_code == 200
    assert got.content == pdf
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-length"] == str(len(pdf))
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"2026-0001.pdf\"; filename*=UTF-8''2026-0001.pdf")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["cache-control"] == "private, no-store"
    assert got.headers["content-security-policy"] == "sandbox"
    assert [t["kind"] for t in invoice(invoices, "INV-1")["timeline"]] == ["created", "document_attached"]


def test_the_download_name_is_sanitized_and_keeps_the_real_one_in_filename_star(invoices: Tenant) -> None:
    invoices.put_invoice("INV-9", number='Facture n° 2026/09 "final"\\x')
    invoices.client.put(document_url("INV-9"), content=make_pdf(), headers=PDF)
    disposition = invoices.client.get(document_url("INV-9")).headers["content-disposition"]
    assert disposition == ("attachment; filename=\"Facture_n_2026_09_final_x.pdf\"; "
                           "filename*=UTF-8''Facture%20n%C2%B0%202026_09%20_final__x.pdf")
    invoices.put_invoice("INV-10", number=...)
    invoices.client.put(document_url("INV-10"), content=make_pdf(), headers=PDF)
    assert 'filename="INV-10.pdf"' in invoices.client.get(document_url("INV-10")).headers["content-disposition"]


def test_a_new_pdf_replaces_the_old_one_and_the_same_bytes_change_nothing(invoices: Tenant) -> None:
    first, second = make_pdf("first"), make_pdf("second")
    created = invoices.client.put(document_url("INV-1"), content=first, headers=PDF).json()["invoice"]
    replaced = invoices.client.put(document_url("INV-1"), content=second, headers=PDF)
    assert replaced.status_code == 200
    assert replaced.json()["result"] == "updated"
    assert int(replaced.json()["invoice"]["revision"]) == int(created["revision"]) + 1
    assert invoices.client.get(document_url("INV-1")).content == second

    again = invoices.client.put(document_url("INV-1"), content=second, headers=PDF)
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")
    assert again.json()["invoice"]["revision"] == replaced.json()["invoice"]["revision"]
    attached = [t for t in invoice(invoices, "INV-1")["timeline"] if t["kind"] == "document_attached"]
    assert [t["detail"]["previous_sha256"] for t in attached] == [None, hashlib.sha256(first).hexdigest()]
    # The invoice's own body is not changed by its PDF: a resend is still unchanged and keeps the PDF.
    resend = invoices.put_invoice("INV-1", number="2026-0001")
    assert resend.json()["result"] == "unchanged"
    assert resend.json()["invoice"]["has_document"] is True


def test_a_body_over_the_limit_is_refused_and_nothing_is_stored(
        invoices: Tenant, settings: Settings, database: Database, clock: FrozenClock) -> None:
    small = with_limits(invoices, settings, database, clock, pdf_bytes=2000)
    pdf = make_pdf("x" * 3000)
    declared = small.put(document_url("INV-1"), content=pdf, headers=PDF)
    assert declared.status_code == 413
    assert "2000 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while reading
        for start in range(0, len(pdf), 500):
            yield pdf[start:start + 500]

    streamed = small.put(document_url("INV-1"), content=chunks(), headers=PDF)
    assert streamed.status_code == 413
    assert snapshot(settings.storage_dir) == {}
    assert documented(invoices) == []


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/html", "application/zip", None])
def test_a_body_that_is_not_declared_a_pdf_is_refused(invoices: Tenant, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = invoices.client.put(document_url("INV-1"), content=make_pdf(), headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("data", "reason"), [
    (b"<!doctype html><html><script>alert(document.cookie)</script></html>", "no %PDF- header"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "no %PDF- header"),
    (b"<html><script>alert(1)</script>" + make_pdf(), "markup"),
    (make_pdf()[:-30], "truncated"),
    (make_pdf(trailer=b"/Encrypt 6 0 R ", objects=[b"<< /Filter /Standard /V 2 >>"]), "encrypted"),
    (make_pdf(catalog=b"/OpenAction 6 0 R ", objects=[b"<< /S /JavaScript /JS (app.alert(1)) >>"]),
     "JavaScript"),
    (make_pdf(objects=[object_stream(b"<< /S /JavaScript /JS (app.alert(1)) >>")]), "JavaScript"),
], ids=["html", "svg", "polyglot", "truncated", "encrypted", "javascript", "hidden-javascript"])
def test_a_file_that_is_not_an_acceptable_pdf_is_refused(
        invoices: Tenant, settings: Settings, data: bytes, reason: str) -> None:
    response = invoices.client.put(document_url("INV-1"), content=data, headers=PDF)
    assert response.status_code == 422
    problem = response.json()
    assert reason in problem["detail"] and reason in problem["errors"][0]["message"]
    assert snapshot(settings.storage_dir) == {}
    assert invoice(invoices, "INV-1")["has_document"] is False


def test_an_unknown_or_foreign_invoice_is_not_found_and_nothing_is_written(
        invoices: Tenant, other_tenant: Tenant, settings: Settings) -> None:
    assert invoices.client.put(document_url("NOPE"), content=make_pdf(), headers=PDF).status_code == 404
    foreign = other_tenant.client.put(document_url("INV-1"), content=make_pdf(), headers=PDF)
    assert foreign.status_code == 404
    assert foreign.json()["detail"] == "No such object."
    assert snapshot(settings.storage_dir) == {}
    assert documented(invoices) == []
    # Nor can the other organization read one that exists.
    invoices.client.put(document_url("INV-1"), content=make_pdf(), headers=PDF)
    assert other_tenant.client.get(document_url("INV-1")).status_code == 404


def test_an_invoice_without_a_pdf_has_no_document_to_download(invoices: Tenant) -> None:
    response = invoices.client.get(document_url("INV-1"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert invoices.client.get(document_url("NOPE")).status_code == 404


def test_the_missing_document_listing_follows_uploads_and_may_have_documents(invoices: Tenant) -> None:
    invoices.client.put(document_url("INV-2"), content=make_pdf(), headers=PDF)
    # INV-3 will never get a PDF: the billing system says so, and it leaves the "still missing" listing.
    invoices.put_invoice("INV-3", number="2026-0003", may_have_documents=False)

    def listed(**params: str) -> list[str]:
        response = invoices.client.get("/api/v1/invoices", params=params)
        assert response.status_code == 200, response.text
        return [item["external_id"] for item in response.json()["items"]]

    assert listed(has_document="false") == ["INV-1", "INV-3"]
    assert listed(has_document="true") == ["INV-2"]
    assert listed(has_document="false", may_have_documents="true") == ["INV-1"]
    assert listed(may_have_documents="false") == ["INV-3"]


# --- Archives ---------------------------------------------------------------------------------------------


def test_an_archive_stores_the_good_entries_and_reports_the_others(invoices: Tenant) -> None:
    one, two = make_pdf("one"), make_pdf("two")
    archive = make_zip([("INV-1.pdf", one), ("INV-2.PDF", two), ("NOPE-7.pdf", make_pdf()),
                        ("INV-3.pdf", b"<html><script>alert(1)</script></html>"), ("notes.txt", b"hello")])
    response = invoices.client.post(ARCHIVES, content=archive, headers=ZIP)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["stored"], body["unchanged"], body["failed"]) == (2, 0, 3)
    assert [(e["name"], e["result"], e["invoice"]) for e in body["entries"]] == [
        ("INV-1.pdf", "stored", "INV-1"), ("INV-2.PDF", "stored", "INV-2"),
        ("NOPE-7.pdf", "unknown_invoice", "NOPE-7"), ("INV-3.pdf", "not_a_pdf", "INV-3"),
        ("notes.txt", "rejected", None)]
    assert "no %PDF- header" in body["entries"][3]["detail"]
    assert invoices.client.get(document_url("INV-1")).content == one
    assert invoices.client.get(document_url("INV-2")).content == two
    assert documented(invoices) == ["INV-1", "INV-2"]
    detail = next(t for t in invoice(invoices, "INV-1")["timeline"] if t["kind"] == "document_attached")
    assert detail["detail"]["source"] == "archive"


def test_resending_an_archive_overwrites_and_same_bytes_are_unchanged(invoices: Tenant) -> None:
    first = make_zip([("INV-1.pdf", make_pdf("one")), ("INV-2.pdf", make_pdf("two"))])
    assert invoices.client.post(ARCHIVES, content=first, headers=ZIP).json()["stored"] == 2
    revision = invoice(invoices, "INV-1")["revision"]

    same = invoices.client.post(ARCHIVES, content=first, headers=ZIP).json()
    assert [e["result"] for e in same["entries"]] == ["unchanged", "unchanged"]
    assert (same["stored"], same["unchanged"]) == (0, 2)
    assert invoice(invoices, "INV-1")["revision"] == revision

    newer = make_pdf("one, corrected")
    second = make_zip([("INV-1.pdf", newer), ("INV-2.pdf", make_pdf("two"))])
    results = invoices.client.post(ARCHIVES, content=second, headers=ZIP).json()["entries"]
    assert [e["result"] for e in results] == ["stored", "unchanged"]
    assert invoices.client.get(document_url("INV-1")).content == newer
    assert int(invoice(invoices, "INV-1")["revision"]) == int(revision) + 1


def test_another_organization_cannot_attach_to_our_invoices_by_archive(
        invoices: Tenant, other_tenant: Tenant) -> None:
    response = other_tenant.client.post(ARCHIVES, content=make_zip([("INV-1.pdf", make_pdf())]), headers=ZIP)
    assert response.json()["entries"][0]["result"] == "unknown_invoice"
    assert documented(invoices) == []


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("INV-2.pdf")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


REFUSED_ARCHIVES = {
    "zip-bomb": (lambda: raw_zip([RawEntry("INV-1.pdf", b"", method=zipfile.ZIP_STORED),
                                  bomb_entry("INV-2.pdf", 1024)]), 413, "entry_too_large", ["INV-2.pdf"]),
    "ratio-bomb": (lambda: raw_zip([bomb_entry("INV-1.pdf", 20)]), 413, "compression_ratio", ["INV-1.pdf"]),
    "lying-size": (lambda: raw_zip([bomb_entry("INV-1.pdf", 512, declared=100)]), 422, "damaged_archive",
                   ["INV-1.pdf"]),
    "nested-zip": (lambda: make_zip([("INV-1.pdf", make_pdf()),
                                     ("INV-2.pdf", make_zip([("INV-3.pdf", make_pdf())]))]),
                   422, "nested_archive", ["INV-2.pdf"]),
    "dot-dot": (lambda: make_zip([("INV-1.pdf", make_pdf()), ("../x.pdf", make_pdf())]),
                422, "unsafe_entries", ["../x.pdf"]),
    "absolute": (lambda: make_zip([("INV-1.pdf", make_pdf()), ("/etc/x.pdf", make_pdf())]),
                 422, "unsafe_entries", ["/etc/x.pdf"]),
    "drive-letter": (lambda: make_zip([("INV-1.pdf", make_pdf()), ("C:\\x.pdf", make_pdf())]),
                     422, "unsafe_entries", ["C:\\x.pdf"]),
    "backslash-dot-dot": (lambda: make_zip([("INV-1.pdf", make_pdf()), ("..\\x.pdf", make_pdf())]),
                          422, "unsafe_entries", ["..\\x.pdf"]),
    "symlink": (lambda: make_zip([("INV-1.pdf", make_pdf()), (_symlink(), b"/etc/passwd")]),
                422, "unsafe_entries", ["INV-2.pdf"]),
    "duplicate": (lambda: make_zip([("INV-1.pdf", make_pdf("a")), ("INV-1.pdf", make_pdf("b"))]),
                  422, "unsafe_entries", ["INV-1.pdf"]),
    "nul": (lambda: rename_entry(make_zip([("INV-1.pdf", make_pdf()), ("INV-2.pdfZ.sh", make_pdf())]),
                                 "INV-2.pdfZ.sh", b"INV-2.pdf\x00.sh"), 422, "unsafe_entries", ["INV-2.pdf\x00.sh"]),
    "long-name": (lambda: make_zip([("INV-1.pdf", make_pdf()), ("x" * 5000 + ".pdf", make_pdf())]),
                  422, "unsafe_entries", ["x" * 5000 + ".pdf"]),
    "folder": (lambda: make_zip([("INV-1.pdf", make_pdf()), ("scans/INV-2.pdf", make_pdf())]),
               422, "unsafe_entries", ["scans/INV-2.pdf"]),
    "not-a-zip": (lambda: make_pdf(), 422, "not_a_zip", []),
}


@pytest.mark.parametrize("case", REFUSED_ARCHIVES)
def test_a_refused_archive_names_its_offenders_and_leaves_no_trace(
        invoices: Tenant, settings: Settings, case: str) -> None:
    build, status, code, offenders = REFUSED_ARCHIVES[case]
    before = snapshot(settings.storage_dir)
    response = invoices.client.post(ARCHIVES, content=build(), headers=ZIP)
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["code"] == code
    assert [e["message"].split(": ")[0] for e in problem.get("errors", [])] == [repr(name) for name in offenders]
    # No partial import: not even the good entry INV-1.pdf, and no file left behind in storage.
    assert documented(invoices) == []
    assert snapshot(settings.storage_dir) == before


def test_a_zip_bomb_is_refused_by_its_compression_ratio(invoices: Tenant, settings: Settings, database: Database,
                                                        clock: FrozenClock) -> None:
    # With the caps raised out of the way, only the ratio stops 1 GiB of zeros hidden in 1 MB (how much of it
    # is inflated before the refusal is tests/test_archives.py's concern; speed is bench/'s, not a test's).
    client = with_limits(invoices, settings, database, clock, pdf_bytes=2000 * 1024 * 1024,
                         archive_uncompressed_bytes=4000 * 1024 * 1024)
    response = client.post(ARCHIVES, content=raw_zip([bomb_entry("INV-1.pdf", 1024)]), headers=ZIP)
    assert (response.status_code, response.json()["code"]) == (413, "compression_ratio")
    assert snapshot(settings.storage_dir) == {}


def test_archive_limits_on_the_body_and_the_entry_count(
        invoices: Tenant, settings: Settings, database: Database, clock: FrozenClock) -> None:
    client = with_limits(invoices, settings, database, clock, archive_bytes=50_000, archive_entries=3)
    four = make_zip([(f"INV-{n}.pdf", make_pdf(str(n))) for n in range(1, 5)])
    counted = client.post(ARCHIVES, content=four, headers=ZIP)
    assert (counted.status_code, counted.json()["code"]) == (413, "too_many_entries")
    big = make_zip([("INV-1.pdf", make_pdf(str(bytes(range(256)) * 300)))], compression=zipfile.ZIP_STORED)
    assert client.post(ARCHIVES, content=big, headers=ZIP).status_code == 413
    assert invoices.client.post(ARCHIVES, content=four, headers={"Content-Type": "multipart/form-data"}
                                ).status_code == 415
    assert documented(invoices) == []
    assert snapshot(settings.storage_dir) == {}


def test_the_operations_are_in_the_openapi_document(invoices: Tenant) -> None:
    paths = invoices.client.get("/api/v1/openapi.json").json()["paths"]
    document = paths["/api/v1/invoices/{external_id}/document"]
    assert document["put"]["requestBody"]["content"] == {
        "application/pdf": {"schema": {"type": "string", "format": "binary"}}}
    assert {"201", "413", "415", "422", "404"} <= set(document["put"]["responses"])
    assert "404" in document["get"]["responses"]
    archives = paths["/api/v1/invoice-document-archives"]["post"]
    assert "application/zip" in archives["requestBody"]["content"]
    assert {"200", "413", "415", "422"} <= set(archives["responses"])


# --- On an S3-compatible store ----------------------------------------------------------------------------


def test_uploads_and_archives_are_stored_in_an_s3_store(invoices: Tenant, settings: Settings, database: Database,
                                                        clock: FrozenClock, s3_bucket: str) -> None:
    """An object store has no directory to spool an upload into: the body goes to the store's own temporary file
    (an upload through the API once answered 500 here), then into the bucket, and comes back byte for byte."""
    app = create_app(dataclasses.replace(settings, storage_url=s3_bucket), clock=clock, database=database)
    with TestClient(app, headers={"Authorization": f"Bearer {invoices.key}"}, raise_server_exceptions=False) as s3:
        pdf, other = make_pdf("Invoice 2026-0001"), make_pdf("Invoice 2026-0002")
        put = s3.put(document_url("INV-1"), content=pdf, headers=PDF)
        assert put.status_code == 201, put.text
        archive = s3.post(ARCHIVES, content=make_zip([("INV-2.pdf", other)]), headers=ZIP)
        assert archive.status_code == 200, archive.text
        assert s3.get(document_url("INV-1")).content == pdf
        assert s3.get(document_url("INV-2")).content == other
    assert not any(path.is_file() for path in settings.storage_dir.rglob("*")), "nothing on the local disk"
