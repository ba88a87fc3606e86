"""The debtor portal end to end, in Chromium: from the link in the email to downloads, remarks, languages and
the ends of a session. The main flow runs with JavaScript on and off (the pages need none). Every debtor page
is checked with axe-core and kept as a full-page screenshot under test-artifacts/screenshots/."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from e2e.conftest import (AXE_JS, MAIN, ORG_NAME, REVOKED, NewContext, PortalServer, open_link, open_portal,
                          screenshot)
from portal.i18n import Formatter, translations

# Open first (the oldest due first: overdue, then due soon, then not yet due, then the credit note that has
# no due date), then the rest, newest first. The draft and the other customer's invoices never show.
HISTORY_ORDER = ["2026-0101", "2026-0102", "2026-0104", "2026-0103", "CN-0001", "2026-0092", "2026-0091",
                 "2025-0090"]
NEVER_SHOWN = ["2026-0099", "2026-0201", "2026-0202", "2026-0301", "Globex", "9,999.00"]

def numbers_listed(page: Page) -> list[str]:
    return [text.split()[-1] for text in page.locator("table.invoices tbody th").all_inner_texts()]


def row_of(page: Page, number: str) -> Any:
    return page.locator("table.invoices tbody tr").filter(has=page.get_by_role("link", name=number, exact=False))


def total_row(page: Page, label: str) -> Any:
    """The amount in the totals table on the row headed `label`."""
    totals = page.locator("table.totals tr").filter(has=page.get_by_role("rowheader", name=label, exact=True))
    return totals.locator("td")


def submit(page: Page, button: str, status: int) -> None:
    """Click a form's submit button and check the status the POST got (a redirect is 303)."""
    with page.expect_response(lambda response: response.request.method == "POST") as response_info:
        page.get_by_role("button", name=button).click()
    response = response_info.value
    assert response.status == status, f"POST {response.url} answered {response.status}, not {status}"
    page.wait_for_load_state()


# --- the main flow, with JavaScript on and off -------------------------------------------------------------

def test_link_lands_on_the_history_with_overdue_first(context: BrowserContext, portal: PortalServer) -> None:
    page = open_portal(context, portal)

    expect(page).to_have_title(f"Your invoices · {ORG_NAME}")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Invoices for {MAIN.name}")
    summary = page.get_by_role("region", name="Summary")
    # 1,210.00 + 100.00 (what is left of 2026-0102) + 605.00 + 99.99
    expect(summary.locator(".card").nth(0)).to_contain_text("€2,014.99")
    expect(summary.locator(".card").nth(1)).to_contain_text("€1,310.00")
    expect(summary.locator(".card").nth(1)).to_contain_text("2 invoices past their due date")

    assert numbers_listed(page) == HISTORY_ORDER
    statuses = page.locator("table.invoices tbody tr .badge").all_inner_texts()
    assert statuses[:4] == ["Overdue", "Overdue", "Due soon", "To pay"]
    assert statuses[4:] == ["Credit note", "Cancelled", "Paid", "Paid"]
    expect(page.get_by_role("table")).to_contain_text(f"{len(HISTORY_ORDER)} invoices")

    first = row_of(page, "2026-0101").locator("td")
    expect(first.nth(1)).to_have_text(Formatter("en_IE").date(portal.date(-70)))
    expect(first.nth(2)).to_have_text(Formatter("en_IE").date(portal.date(-40)))
    expect(first.nth(3)).to_have_text("€1,210.00")
    expect(first.nth(4)).to_have_text("€1,210.00")
    partly = row_of(page, "2026-0102").locator("td")
    expect(partly.nth(3)).to_have_text("€250.00")
    expect(partly.nth(4)).to_have_text("€100.00")
    expect(row_of(page, "2026-0091").locator("td").nth(4)).to_have_text("—")

    body = page.locator("body").inner_text()
    for text in NEVER_SHOWN:
        assert text not in body


def test_invoice_page_and_its_pdf(context: BrowserContext, portal: PortalServer) -> None:
    page = open_portal(context, portal)
    page.get_by_role("link", name="2026-0101").click()

    expect(page).to_have_url(f"{portal.base_url}/portal/invoices/{portal.ids['2026-0101']}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Invoice 2026-0101")
    expect(page.locator(".lead")).to_have_text("Kitchen equipment, spring order")
    expect(total_row(page, "Total excl. VAT")).to_have_text("€1,000.00")
    expect(total_row(page, "VAT")).to_have_text("€210.00")
    expect(total_row(page, "Total")).to_have_text("€1,210.00")
    expect(total_row(page, "Still to pay")).to_have_text("€1,210.00")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download PDF").click()
    download = download_info.value
    assert download.suggested_filename == "2026-0101.pdf"
    assert download.failure() is None
    with open(download.path(), "rb") as file:
        assert file.read() == portal.pdfs["2026-0101"]

    # The page is still there after the download, and "All invoices" leads back.
    page.get_by_role("link", name="All invoices").click()
    expect(page).to_have_url(f"{portal.base_url}/portal")


def test_invoice_without_pdf_offers_the_print_view(context: BrowserContext, portal: PortalServer) -> None:
    page = open_portal(context, portal)
    page.get_by_role("link", name="2026-0104").click()
    expect(page.get_by_role("link", name="Download PDF")).to_have_count(0)
    expect(page.locator(".notice")).to_contain_text("The PDF of this invoice is not available yet.")

    page.get_by_role("link", name="Open a printable version").click()
    expect(page).to_have_url(f"{portal.base_url}/portal/invoices/{portal.ids['2026-0104']}/print")
    expect(page.get_by_role("heading", level=1)).to_have_text("Invoice 2026-0104")
    expect(page.locator(".print-header")).to_contain_text(ORG_NAME)
    expect(page.locator(".print-header")).to_contain_text(MAIN.name)
    expect(total_row(page, "Total")).to_have_text("€99.99")
    page.get_by_role("link", name="Back to the invoice").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Invoice 2026-0104")


def test_selected_pdfs_download_as_one_zip(context: BrowserContext, portal: PortalServer) -> None:
    page = open_portal(context, portal)
    for box in page.locator("table.invoices input[type=checkbox]").all():
        box.uncheck()  # overdue invoices come preselected for payment
    page.get_by_label("Select invoice 2026-0101").check()
    page.get_by_label("Select invoice 2026-0102").check()  # no PDF: left out of the zip
    page.get_by_label("Select invoice 2026-0103").check()

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download selected PDFs (zip)").click()
    download = download_info.value
    assert download.suggested_filename == f"{ORG_NAME} invoices.zip"
    with open(download.path(), "rb") as file:
        archive = zipfile.ZipFile(io.BytesIO(file.read()))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == ["2026-0101.pdf", "2026-0103.pdf"]
    for number in ("2026-0101", "2026-0103"):
        assert archive.read(f"{number}.pdf") == portal.pdfs[number]


def test_remark_is_sent_and_shown_in_the_thread(context: BrowserContext, portal: PortalServer,
                                                request: pytest.FixtureRequest) -> None:
    text = f"Two crates arrived damaged; can you credit them? ({request.node.callspec.id})"
    page = open_portal(context, portal)
    page.get_by_role("link", name="2026-0103").click()

    # An empty remark is refused next to the field, with nothing sent.
    submit(page, "Send remark", 422)
    expect(page.locator("#remark-body-error")).to_have_text("Please write your remark.")
    expect(page.get_by_label("Your question or remark")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Your question or remark").fill(text)
    page.get_by_label("Email or phone for the answer (optional)").fill("anna@dupont.example")
    submit(page, "Send remark", 303)

    expect(page).to_have_url(f"{portal.base_url}/portal/invoices/{portal.ids['2026-0103']}?sent=1#remarks")
    expect(page.get_by_role("status")).to_have_text(
        "Thank you. Your remark was sent; the answer will appear here.")
    mine = page.locator("#remarks li.remark-debtor").filter(has_text=text)
    expect(mine).to_have_count(1)
    expect(mine.locator(".meta")).to_contain_text("You ·")
    expect(page.get_by_label("Your question or remark")).to_have_value("")
    expect(page.locator(".timeline")).to_contain_text("You sent a remark")
    screenshot(page, f"invoice-after-remark-{request.node.callspec.id}")


def test_language_form_switches_the_pages(context: BrowserContext, portal: PortalServer,
                                          request: pytest.FixtureRequest) -> None:
    page = open_portal(context, portal)
    page.get_by_role("link", name="2026-0101").click()
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "en")
    english, french = Formatter.for_language("en", MAIN.locale), Formatter.for_language("fr", MAIN.locale)
    due = page.locator(".facts dd").nth(1)
    expect(due).to_have_text(english.date(portal.date(-40)))

    page.get_by_label("Language").select_option("fr")
    submit(page, "Change", 303)

    # Back on the same page, in French: the lang attribute, and dates and amounts as a French reader writes
    # them. The words follow the French catalog when there is one (English msgids otherwise).
    expect(html).to_have_attribute("lang", "fr")
    expect(page).to_have_url(f"{portal.base_url}/portal/invoices/{portal.ids['2026-0101']}")
    assert french.date(portal.date(-40)) != english.date(portal.date(-40))
    expect(due).to_have_text(french.date(portal.date(-40)))
    expect(total_row(page, translations("fr").gettext("Still to pay"))).to_have_text(french.money(121000, "EUR"))
    heading = translations("fr").gettext("Invoice %(number)s") % {"number": "2026-0101"}
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    expect(page.locator("#language-select")).to_have_value("fr")

    # The choice stays for the next pages of the session.
    page.goto("/portal")
    expect(html).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        translations("fr").gettext("Invoices for %(name)s") % {"name": MAIN.name})
    expect(row_of(page, "2026-0101").locator("td").nth(1)).to_have_text(french.date(portal.date(-70)))
    screenshot(page, f"history-french-{request.node.callspec.id}")


# --- scopes and the ends of a session ----------------------------------------------------------------------

def test_scoped_link_sees_only_its_invoice(new_context: NewContext, portal: PortalServer) -> None:
    context = new_context()
    page = open_portal(context, portal, invoices=["INV-103"])
    assert numbers_listed(page) == ["2026-0103"]
    expect(page.get_by_role("region", name="Summary").locator(".card").nth(0)).to_contain_text("€605.00")
    expect(page.get_by_role("region", name="Summary").locator(".card").nth(1)).to_contain_text("Nothing overdue")
    page.get_by_role("link", name="2026-0103").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Invoice 2026-0103")

    # Another invoice of the same customer: the not-found page, for the page and for its PDF.
    response = page.goto(f"/portal/invoices/{portal.ids['2026-0101']}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page.locator("body")).not_to_contain_text("2026-0101")
    assert context.request.get(f"/portal/invoices/{portal.ids['2026-0101']}/pdf").status == 404
    page.get_by_role("link", name="Back to your invoices").click()
    assert numbers_listed(page) == ["2026-0103"]


def test_other_customers_invoices_are_not_found(new_context: NewContext, portal: PortalServer) -> None:
    context = new_context()
    page = open_portal(context, portal)
    other = portal.ids["2026-0201"]
    response = page.goto(f"/portal/invoices/{other}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    for path in (f"/portal/invoices/{other}/pdf", f"/portal/invoices/{other}/print"):
        assert context.request.get(path).status == 404, path
    # A zip asked for the other customer's invoice holds nothing: back to the history.
    response = context.request.get(f"/portal/download?invoice={other}", max_redirects=0)
    assert response.status == 303 and response.headers["location"].startswith("/portal?")


def test_revoked_link_ends_the_open_session(new_context: NewContext, portal: PortalServer) -> None:
    context = new_context()
    url = portal.link(REVOKED.external_id)
    page = open_link(context, url)
    assert numbers_listed(page) == ["2026-0301"]

    assert portal.revoke(REVOKED.external_id) >= 1
    with page.expect_response(f"{portal.base_url}/portal/invoices/{portal.ids['2026-0301']}") as response_info:
        page.get_by_role("link", name="2026-0301").click()
    assert response_info.value.status == 401
    expect(page.get_by_role("heading", level=1)).to_have_text("This link no longer works")
    expect(page.locator("body")).not_to_contain_text("2026-0301")
    # The session is gone for good, and the link itself no longer opens one.
    assert page.goto("/portal").status == 401  # type: ignore[union-attr]
    expect(page.get_by_role("heading", level=1)).to_have_text("This link no longer works")
    page.goto(url)
    expect(page.get_by_role("heading", level=1)).to_have_text("This link no longer works")
    assert "quittance_session" not in {cookie["name"] for cookie in context.cookies()}


def test_sign_out_ends_the_session(new_context: NewContext, portal: PortalServer) -> None:
    context = new_context(java_script_enabled=False)
    page = open_portal(context, portal)
    copied = [cookie for cookie in context.cookies() if cookie["name"] == "quittance_session"]
    submit(page, "Sign out", 200)
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    expect(page.locator("body")).not_to_contain_text("2026-0101")
    assert "quittance_session" not in {cookie["name"] for cookie in context.cookies()}
    response = page.goto("/portal")
    assert response is not None and response.status == 401
    expect(page.get_by_role("heading", level=1)).to_have_text("This link no longer works")
    # A copy of the cookie taken before signing out opens nothing: the session ended on the server.
    replay = new_context(java_script_enabled=False)
    replay.add_cookies(copied)  # type: ignore[arg-type]
    replayed = replay.new_page()
    response = replayed.goto("/portal")
    assert response is not None and response.status == 401
    expect(replayed.locator("body")).not_to_contain_text("2026-0101")


def test_broken_link_gets_the_link_invalid_page(new_context: NewContext, portal: PortalServer) -> None:
    page = new_context().new_page()
    token = portal.link().rsplit("/", 1)[1]
    response = page.goto(f"/l/{token[:-4]}AAAA")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("This link no longer works")
    assert "quittance_session" not in {cookie["name"] for cookie in page.context.cookies()}


# --- accessibility and screenshots of every debtor page ----------------------------------------------------

def _history(page: Page, portal: PortalServer) -> None:
    """Where the link lands."""


def _invoice(number: str, suffix: str = "") -> Callable[[Page, PortalServer], None]:
    def go(page: Page, portal: PortalServer) -> None:
        page.goto(f"/portal/invoices/{portal.ids[number]}{suffix}")
    return go


def _remark_error(page: Page, portal: PortalServer) -> None:
    _invoice("2026-0101")(page, portal)
    submit(page, "Send remark", 422)
    expect(page.locator("#remark-body-error")).to_be_visible()


def _french(page: Page, portal: PortalServer) -> None:
    # The cookie the language form sets (the form itself is tested above).
    page.context.add_cookies([{"name": "quittance_lang", "value": "fr", "url": portal.base_url}])
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "fr")


def _nothing_matches(page: Page, portal: PortalServer) -> None:
    page.goto("/portal?status=cancelled&year=1999")
    expect(page.locator(".empty")).to_have_text("No invoices match.")


def _form_expired(page: Page, portal: PortalServer) -> None:
    # A form whose CSRF token no longer matches, as after a session ended in another tab.
    page.locator("form.language input[name=csrf]").evaluate("input => { input.value = 'expired' }")
    submit(page, "Change", 403)
    expect(page.get_by_role("heading", level=1)).to_have_text("This form has expired")


def _link_invalid(page: Page, portal: PortalServer) -> None:
    page.goto("/l/this-link-was-mangled-by-a-mail-client")


def _signed_out(page: Page, portal: PortalServer) -> None:
    submit(page, "Sign out", 200)
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")


def _not_found(page: Page, portal: PortalServer) -> None:
    page.goto("/portal/invoices/999999999")


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
PAGES: dict[str, tuple[Callable[[Page, PortalServer], None], dict[str, Any]]] = {
    "history": (_history, {}),
    "history-phone": (_history, PHONE),
    "history-french": (_french, {}),
    "history-nothing-matches": (_nothing_matches, {}),
    "invoice": (_invoice("2026-0101"), {}),
    "invoice-phone": (_invoice("2026-0101"), PHONE),
    "invoice-without-pdf": (_invoice("2026-0104"), {}),
    "invoice-remark-error": (_remark_error, {}),
    "credit-note": (_invoice("CN-0001"), {}),
    "print": (_invoice("2026-0101", "/print"), {}),
    "link-invalid": (_link_invalid, {}),
    "signed-out": (_signed_out, {}),
    "not-found": (_not_found, {}),
    "form-expired": (_form_expired, {}),
}
AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target, html: n.html, summary: n.failureSummary}))}));
}"""
BLOCKING = {"serious", "critical"}


@pytest.mark.parametrize("name", list(PAGES))
def test_page_is_accessible(name: str, new_context: NewContext, portal: PortalServer) -> None:
    """axe-core on every debtor page; serious or critical violations fail. Our CSP forbids injected scripts,
    so these contexts bypass it (the other tests keep it and fail on any CSP report)."""
    go, options = PAGES[name]
    context = new_context(bypass_csp=True, **options)
    page = open_portal(context, portal)
    go(page, portal)
    page.wait_for_load_state("load")
    screenshot(page, name)

    assert AXE_JS.exists(), f"{AXE_JS} missing: run `npm ci --prefix e2e` (scripts/install --test does)"
    page.add_script_tag(path=str(AXE_JS))
    violations = page.evaluate(AXE_RUN)
    report = json.dumps(violations, indent=2, ensure_ascii=False)
    if violations:
        print(f"axe on {name} ({page.url}):\n{report}")
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"axe found serious or critical problems on {name}:\n{report}"
