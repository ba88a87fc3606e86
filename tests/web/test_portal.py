"""The debtor portal over HTTP: landing, sessions bound to links, scoping, pages, downloads, remarks."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer
from starlette.testclient import TestClient

from portal.app import create_app
from portal.db.portal import link_invoices, link_visits
from portal.domain import remarks as remark_rules
from tests.conftest import Tenant, invoice_body

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


class Debtor:
    """A browser: cookies kept, redirects not followed unless asked."""

    def __init__(self, app: Any) -> None:
        self.client = TestClient(app, base_url="http://testserver", follow_redirects=False)

    def open(self, url: str) -> Any:
        return self.client.get(url.removeprefix("http://testserver"))

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def csrf(self, path: str = "/portal") -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.get(path).text)
        assert match, "no CSRF token on the page"
        return match.group(1)

    def post_form(self, path: str, data: dict[str, str], **kwargs: Any) -> Any:
        return self.client.post(path, data=data, **kwargs)


def link_for(tenant: Tenant, customer: str = "C1", **body: Any) -> str:
    response = tenant.client.post(f"/api/v1/customers/{customer}/portal-links", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["url"])


def invoice_id(database: Any, external_id: str) -> int:
    from portal.db.invoices import invoices

    with database.transaction() as conn:
        return int(conn.scalar(sa.select(invoices.c.id).where(invoices.c.external_id == external_id)))


@pytest.fixture
def debtor(app: Any) -> Debtor:
    return Debtor(app)


@pytest.fixture
def invoices_pushed(tenant: Tenant) -> Tenant:
    tenant.put_invoice("OPEN-1", number="F-001", due_date="2026-12-01")
    tenant.put_invoice("LATE-1", number="F-002", issue_date="2026-09-01", due_date="2026-10-01", total="50.00",
                       lines=[])
    tenant.put_invoice("PAID-1", number="F-003", status="paid", issue_date="2025-03-01", due_date="2025-04-01")
    tenant.put_invoice("DRAFT-1", number=None, status="draft")
    tenant.put_invoice("CN-1", number="AV-001", kind="credit_note", status="paid", total="10.00", lines=[])
    assert tenant.client.put("/api/v1/invoices/OPEN-1/document", content=PDF,
                             headers={"content-type": "application/pdf"}).status_code == 201
    return tenant


def test_landing_opens_a_session_and_drops_the_token(invoices_pushed: Tenant, debtor: Debtor) -> None:
    url = link_for(invoices_pushed)
    landing = debtor.open(url)
    assert landing.status_code == 303
    assert landing.headers["location"] == "/portal"
    cookie = landing.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert landing.headers["referrer-policy"] == "no-referrer"
    page = debtor.get("/portal")
    assert page.status_code == 200
    assert url.rsplit("/", 1)[1] not in page.text


def test_https_deployments_get_secure_cookies_and_hsts(invoices_pushed: Tenant, app: Any) -> None:
    services = app.state.services
    https = create_app(replace(services.settings, base_url="https://pay.example"), clock=services.clock,
                       database=services.db)
    url = link_for(invoices_pushed)
    landing = TestClient(https, base_url="https://pay.example", follow_redirects=False).get(
        "/l/" + url.rsplit("/", 1)[1])
    assert "Secure" in landing.headers["set-cookie"]
    assert landing.headers["strict-transport-security"].startswith("max-age=")


def test_history_shows_open_first_and_hides_drafts(invoices_pushed: Tenant, debtor: Debtor) -> None:
    debtor.open(link_for(invoices_pushed))
    page = debtor.get("/portal").text
    order = [page.index(number) for number in ("F-002", "F-001", "AV-001", "F-003")]
    assert order == sorted(order), "overdue first, then open, then the rest newest first"
    assert "DRAFT-1" not in page
    assert "badge-overdue" in page and "badge-credit_note" in page
    # 121.00 + 50.00 outstanding; the customer is fr-BE, so Belgian French formatting.
    assert "171,00\u00a0€" in page
    assert "50,00\u00a0€" in page


def test_filters_by_status_and_year(invoices_pushed: Tenant, debtor: Debtor) -> None:
    debtor.open(link_for(invoices_pushed))
    paid = debtor.get("/portal", params={"status": "paid"}).text
    assert "F-003" in paid and "F-001" not in paid
    year_2025 = debtor.get("/portal", params={"year": "2025"}).text
    assert "F-003" in year_2025 and "F-002" not in year_2025
    assert debtor.get("/portal", params={"status": "bogus", "year": "x", "page": "-1"}).status_code == 200


def test_pagination(tenant: Tenant, debtor: Debtor) -> None:
    items = [{**invoice_body(number=f"N-{i:03d}", issue_date=f"2026-{1 + i % 9:02d}-01", due_date="2026-12-31"),
              "external_id": f"P-{i}"} for i in range(60)]
    assert tenant.client.post("/api/v1/invoices/batch", json={"invoices": items}).json()["created"] == 60
    debtor.open(link_for(tenant))
    seen = set()
    for page in (1, 2, 3):
        text = debtor.get("/portal", params={"page": str(page)}).text
        seen |= set(re.findall(r"N-\d{3}", text))
    assert len(seen) == 60
    assert 'rel="next"' not in debtor.get("/portal", params={"page": "3"}).text


def test_invoice_page_pdf_and_printable_view(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    debtor.open(link_for(invoices_pushed))
    open_id, late_id = invoice_id(database, "OPEN-1"), invoice_id(database, "LATE-1")
    page = debtor.get(f"/portal/invoices/{open_id}").text
    assert "Consulting" in page and f"/portal/invoices/{open_id}/pdf" in page

    pdf = debtor.get(f"/portal/invoices/{open_id}/pdf")
    assert pdf.status_code == 200
    assert pdf.content == PDF
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith('attachment; filename="F-001.pdf"')
    assert pdf.headers["x-content-type-options"] == "nosniff"
    assert "no-store" in pdf.headers["cache-control"]

    no_pdf = debtor.get(f"/portal/invoices/{late_id}").text
    assert f"/portal/invoices/{late_id}/print" in no_pdf
    assert debtor.get(f"/portal/invoices/{late_id}/pdf").status_code == 404
    assert "F-002" in debtor.get(f"/portal/invoices/{late_id}/print").text


def test_several_pdfs_as_one_zip(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    other = PDF.replace(b"1.4", b"1.5")
    invoices_pushed.client.put("/api/v1/invoices/PAID-1/document", content=other,
                               headers={"content-type": "application/pdf"})
    debtor.open(link_for(invoices_pushed))
    ids = [invoice_id(database, e) for e in ("OPEN-1", "PAID-1", "LATE-1")]
    response = debtor.get("/portal/download", params=[("invoice", str(i)) for i in ids])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["F-001.pdf", "F-003.pdf"]
        assert archive.read("F-003.pdf") == other


def test_another_customers_invoice_pdf_and_remark_are_404(invoices_pushed: Tenant, debtor: Debtor,
                                                          database: Any) -> None:
    invoices_pushed.put_customer("C2", name="Someone else")
    invoices_pushed.put_invoice("THEIRS", customer="C2", number="SECRET-9", title="not yours")
    invoices_pushed.client.put("/api/v1/invoices/THEIRS/document", content=PDF,
                               headers={"content-type": "application/pdf"})
    theirs, draft = invoice_id(database, "THEIRS"), invoice_id(database, "DRAFT-1")
    debtor.open(link_for(invoices_pushed))
    csrf = debtor.csrf()
    for target in (theirs, draft, 999999, "abc"):
        for path in (f"/portal/invoices/{target}", f"/portal/invoices/{target}/pdf",
                     f"/portal/invoices/{target}/print"):
            response = debtor.get(path)
            assert response.status_code == 404, path
            assert "SECRET-9" not in response.text and "not yours" not in response.text
        remark = debtor.post_form(f"/portal/invoices/{target}/remarks", {"csrf": csrf, "body": "hello"})
        assert remark.status_code == 404
    zipped = debtor.get("/portal/download", params={"invoice": str(theirs)})
    assert zipped.status_code == 303
    assert invoices_pushed.client.get("/api/v1/remarks").json()["items"] == []


def test_scoped_link_sees_only_its_invoices(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    invoices_pushed.client.put("/api/v1/invoices/LATE-1/document", content=PDF.replace(b"1.4", b"1.5"),
                               headers={"content-type": "application/pdf"})
    debtor.open(link_for(invoices_pushed, invoices=["LATE-1"]))
    with database.transaction() as conn:
        listed = conn.execute(sa.select(link_invoices.c.invoice_id, link_invoices.c.organization_id)).all()
    assert listed == [(invoice_id(database, "LATE-1"), invoices_pushed.org.id)], "the scope is a row per invoice"
    page = debtor.get("/portal").text
    assert "F-002" in page
    assert "F-001" not in page and "F-003" not in page
    late, outside = invoice_id(database, "LATE-1"), invoice_id(database, "OPEN-1")  # OPEN-1 has a PDF too
    for path in (f"/portal/invoices/{outside}", f"/portal/invoices/{outside}/pdf",
                 f"/portal/invoices/{outside}/print", f"/portal/pay?invoice={outside}",
                 f"/portal/pay?invoice={late}&invoice={outside}"):
        assert debtor.get(path).status_code == 404, path
    assert debtor.get(f"/portal/invoices/{late}/pdf").status_code == 200
    assert debtor.get(f"/portal/pay?invoice={late}").status_code == 200
    zipped = debtor.get("/portal/download", params=[("invoice", str(outside)), ("invoice", str(late))])
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert archive.namelist() == ["F-002.pdf"]
    assert debtor.get("/portal/download", params={"invoice": str(outside)}).status_code == 303
    csrf = debtor.csrf()
    refused = debtor.client.post("/portal/checkout", data={"csrf": csrf, "invoice": str(outside),
                                                           "method": "mollie:ideal"})
    assert refused.status_code == 404
    remark = debtor.post_form(f"/portal/invoices/{outside}/remarks", {"csrf": csrf, "body": "hello"})
    assert remark.status_code == 404
    bad_scope = invoices_pushed.client.post("/api/v1/customers/C1/portal-links", json={"invoices": ["NOPE"]})
    assert bad_scope.status_code == 422
    assert bad_scope.json()["errors"][0]["path"] == "/invoices/0"


def test_bad_tokens_get_one_generic_page(invoices_pushed: Tenant, app: Any, debtor: Debtor) -> None:
    url = link_for(invoices_pushed)
    token = url.rsplit("/", 1)[1]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    services = app.state.services
    other_key_app = create_app(replace(services.settings, secret_keys=("some-other-key",)), clock=services.clock,
                               database=services.db)
    # Signed with our key for another purpose: the debtor session cookie of earlier versions.
    session_token = URLSafeTimedSerializer(services.settings.signing_keys[0], salt="debtor-session").dumps(
        {"l": 1, "n": "x"})
    answers = [debtor.get(f"/l/{flipped}"), debtor.get("/l/garbage"), debtor.get(f"/l/{session_token}"),
               TestClient(other_key_app, follow_redirects=False).get(f"/l/{token}")]
    for answer in answers:
        assert answer.status_code == 404
        assert "set-cookie" not in answer.headers or "quittance_session=\"\"" in answer.headers["set-cookie"]
        assert "Brasserie" not in answer.text and "F-001" not in answer.text
    assert answers[0].text == answers[1].text


def test_expired_link_one_second_late_names_the_contact(invoices_pushed: Tenant, debtor: Debtor, clock: Any,
                                                        database: Any) -> None:
    from portal.domain.organizations import get_organization, set_branding

    database.run(lambda conn: set_branding(conn, get_organization(conn, "acme"), contact_email="compta@acme.example"))
    url = link_for(invoices_pushed, lifetime_days=1)
    clock.advance(days=1, seconds=-1)
    assert debtor.open(url).status_code == 303
    clock.advance(seconds=1)
    expired = debtor.open(url)
    assert expired.status_code == 404
    assert "compta@acme.example" in expired.text
    assert '<html lang="fr">' in expired.text  # the customer's language
    assert debtor.get("/portal").status_code == 401, "the session dies with its link"


def test_revocation_ends_open_sessions_on_gets_and_posts(invoices_pushed: Tenant, debtor: Debtor,
                                                         database: Any) -> None:
    debtor.open(link_for(invoices_pushed))
    csrf = debtor.csrf()
    open_id = invoice_id(database, "OPEN-1")
    revoked = invoices_pushed.client.post("/api/v1/customers/C1/portal-links/revoke")
    assert revoked.json() == {"revoked": 1}
    assert debtor.get("/portal").status_code == 401
    assert debtor.get(f"/portal/invoices/{open_id}/pdf").status_code == 401
    assert debtor.post_form(f"/portal/invoices/{open_id}/remarks", {"csrf": csrf, "body": "x"}).status_code == 401
    fresh = Debtor(debtor.client.app)
    assert fresh.open(link_for(invoices_pushed)).status_code == 303, "links issued after revocation work"


def test_session_expires_but_the_link_reopens_it(invoices_pushed: Tenant, debtor: Debtor, clock: Any) -> None:
    url = link_for(invoices_pushed)
    debtor.open(url)
    clock.advance(minutes=61)
    assert debtor.get("/portal").status_code == 401
    debtor.open(url)
    assert debtor.get("/portal").status_code == 200


def test_gets_change_nothing_but_the_visit_log(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    url = link_for(invoices_pushed)
    scanner = TestClient(debtor.client.app, follow_redirects=False,
                         headers={"user-agent": "Mozilla/5.0 (compatible; SafeLinks scanner)"})
    for _ in range(5):
        scanner.get(url.removeprefix("http://testserver"))
        scanner.head(url.removeprefix("http://testserver"))
    debtor.client.headers["user-agent"] = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"
    debtor.open(url)
    with database.transaction() as conn:
        families = [row.browser_family for row in conn.execute(sa.select(link_visits.c.browser_family))]
    assert families.count("Robot or scanner") == 5
    assert families[-1] == "Chrome"
    assert invoices_pushed.client.get("/api/v1/remarks").json()["items"] == []


def test_remark_round_trip_with_the_billing_system(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    debtor.open(link_for(invoices_pushed))
    open_id = invoice_id(database, "OPEN-1")
    csrf = debtor.csrf(f"/portal/invoices/{open_id}")
    sent = debtor.post_form(f"/portal/invoices/{open_id}/remarks",
                            {"csrf": csrf, "body": "Le montant est-il correct ? <script>x</script>",
                             "reply_to": "jean@dupont.example"})
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/portal/invoices/{open_id}?sent=1#remarks"
    confirmation = debtor.get(f"/portal/invoices/{open_id}", params={"sent": "1"}).text
    assert 'role="status"' in confirmation
    assert "&lt;script&gt;x&lt;/script&gt;" in confirmation and "<script>x" not in confirmation

    listed = invoices_pushed.client.get("/api/v1/remarks", params={"since": "2026-11-01T00:00:00Z"}).json()
    assert [(r["invoice"], r["author"], r["reply_to"]) for r in listed["items"]] == [
        ("OPEN-1", "debtor", "jean@dupont.example")]
    announced = invoices_pushed.client.get("/api/v1/events").json()["items"]
    assert [(e["type"], e["invoice"], e["data"]["body"]) for e in announced] == [
        ("remark.created", "OPEN-1", "Le montant est-il correct ? <script>x</script>")]
    answer = invoices_pushed.client.post("/api/v1/invoices/OPEN-1/remarks",
                                         json={"body": "Oui, il est correct.", "author_name": "Compta"})
    assert answer.status_code == 201
    assert "Oui, il est correct." in debtor.get(f"/portal/invoices/{open_id}").text
    assert [r["author"] for r in invoices_pushed.client.get(
        "/api/v1/remarks", params={"author": "billing_system"}).json()["items"]] == ["billing_system"]


def test_remark_form_protections(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    debtor.open(link_for(invoices_pushed))
    open_id = invoice_id(database, "OPEN-1")
    path = f"/portal/invoices/{open_id}/remarks"
    csrf = debtor.csrf(f"/portal/invoices/{open_id}")
    assert debtor.post_form(path, {"body": "no token"}).status_code == 403
    assert debtor.post_form(path, {"csrf": "forged", "body": "x"}).status_code == 403
    assert debtor.post_form(path, {"csrf": csrf, "body": "x"},
                            headers={"origin": "https://evil.example"}).status_code == 403
    assert debtor.post_form(path, {"csrf": csrf, "body": "x"},
                            headers={"sec-fetch-site": "cross-site"}).status_code == 403
    # Our pages send no Referer, so Chromium sends Origin: null on our own forms: the token decides.
    assert debtor.post_form(path, {"csrf": csrf, "body": "from our own page"},
                            headers={"origin": "null", "sec-fetch-site": "same-origin"}).status_code == 303
    other = Debtor(debtor.client.app)
    other.open(link_for(invoices_pushed))
    assert other.post_form(path, {"csrf": csrf, "body": "someone else's token"}).status_code == 403

    too_long = debtor.post_form(path, {"csrf": csrf, "body": "x" * 2001})
    assert too_long.status_code == 422
    assert 'aria-invalid="true"' in too_long.text and "x" * 2001 in too_long.text
    assert debtor.post_form(path, {"csrf": csrf, "body": "   "}).status_code == 422
    assert debtor.client.post(path, content=b"x" * 20000,
                              headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    assert debtor.client.post(path, json={"body": "x"}).status_code == 415

    limit = remark_rules.RATE_LIMIT[0]
    for i in range(limit - 1):
        assert debtor.post_form(path, {"csrf": csrf, "body": f"remark {i}"}).status_code == 303
    refused = debtor.post_form(path, {"csrf": csrf, "body": "one more"})
    assert refused.status_code == 429
    assert len(invoices_pushed.client.get("/api/v1/remarks").json()["items"]) == limit


def test_language_switch_is_remembered_and_only_redirects_home(invoices_pushed: Tenant, debtor: Debtor) -> None:
    debtor.open(link_for(invoices_pushed))
    assert '<html lang="fr">' in debtor.get("/portal").text
    csrf = debtor.csrf()
    switched = debtor.post_form("/portal/language", {"csrf": csrf, "language": "de", "next": "/portal?status=open"})
    assert switched.status_code == 303
    assert switched.headers["location"] == "/portal?status=open"
    assert '<html lang="de">' in debtor.get("/portal").text
    for evil in ("https://evil.example", "//evil.example", "/portal\\@evil"):
        answer = debtor.post_form("/portal/language", {"csrf": csrf, "language": "sv", "next": evil})
        assert answer.headers["location"] == "/portal"
    assert debtor.post_form("/portal/language", {"language": "nl"}).status_code == 403


def test_sign_out_ends_the_session(invoices_pushed: Tenant, debtor: Debtor) -> None:
    debtor.open(link_for(invoices_pushed))
    assert debtor.post_form("/portal/sign-out", {"csrf": debtor.csrf()}).status_code == 200
    assert debtor.get("/portal").status_code == 401


def test_every_page_carries_the_security_headers(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    debtor.open(link_for(invoices_pushed))
    open_id = invoice_id(database, "OPEN-1")
    for path in ("/portal", f"/portal/invoices/{open_id}", f"/portal/invoices/{open_id}/print", "/portal/nope",
                 "/l/bad"):
        headers = debtor.get(path).headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in headers
    page = debtor.get("/portal").text
    assert "<script" not in page and "style=" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "no third-party assets"


def test_branding_colour_and_contact(invoices_pushed: Tenant, debtor: Debtor, database: Any) -> None:
    from portal.domain.organizations import get_organization, set_branding

    database.run(lambda conn: set_branding(conn, get_organization(conn, "acme"), color="#ffd400",
                                           contact_email="help@acme.example", contact_phone="+32 2 123 45 67"))
    debtor.open(link_for(invoices_pushed))
    page = debtor.get("/portal").text
    assert "/brand/acme/theme.css" in page and "help@acme.example" in page
    theme = debtor.get("/brand/acme/theme.css")
    assert theme.headers["content-type"].startswith("text/css")
    assert "--brand: #ffd400; --brand-text: #1a1a1a;" in theme.text, "dark text on a light brand colour"


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_values_full_of_markup_are_shown_as_text_on_every_page(invoices_pushed: Tenant, debtor: Debtor,
                                                               database: Any, language: str) -> None:
    """Names, numbers, titles and lines come from the billing system: every page escapes them, while the
    translated sentences around them keep their own markup (the contact links)."""
    from portal.domain.organizations import get_organization, set_branding

    database.run(lambda conn: set_branding(conn, get_organization(conn, "acme"), contact_email="a&b@acme.example"))
    invoices_pushed.put_customer(name="Dupont <b>&</b> \"Fils\" l'aîné")
    invoices_pushed.put_invoice("ODD-1", number="<i>F&'\"</i>", title="1 < 2 & \"3\"", lines=[
        {"description": "<script>alert('x')</script>", "quantity": "1", "unit_price": "121.00", "vat_rate": "0",
         "total": "121.00"}])
    debtor.open(link_for(invoices_pushed))
    debtor.client.cookies.set("quittance_lang", language)
    odd = invoice_id(database, "ODD-1")
    history, invoice, printable = (debtor.get(path) for path in (
        "/portal", f"/portal/invoices/{odd}", f"/portal/invoices/{odd}/print"))
    for page in (history, invoice, printable):
        assert page.status_code == 200
        assert f'<html lang="{language}">' in page.text
        assert "&lt;i&gt;F&amp;&#39;&#34;&lt;/i&gt;" in page.text and "<i>F" not in page.text
    assert "Dupont &lt;b&gt;&amp;&lt;/b&gt; &#34;Fils&#34; l&#39;aîné" in history.text
    for page in (invoice, printable):
        assert "1 &lt; 2 &amp; &#34;3&#34;" in page.text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text and "<script>" not in page.text
    assert '<a href="mailto:a&amp;b@acme.example">a&amp;b@acme.example</a>' in history.text
