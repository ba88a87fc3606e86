"""The demo organization that `scripts/demo` serves: customers in five languages, invoices in every state
(open, overdue, paid, draft, credit note, all in EUR), and a PDF for each invoice a debtor could download.

Everything goes through the domain services the machine API uses (`upsert_customer`, `upsert_invoices`,
`lifecycle.activate`, `attach_documents`), so the demo shows what a billing system's pushes produce. Loading is idempotent:
loading again the same day finds every customer and invoice unchanged and every PDF already stored. Dates
count from today so that an overdue invoice stays overdue; on a later day a load moves them along, the way a
billing system's resend would ("updated"). `rotate_demo_key` and `issue_demo_links` make the credentials
scripts/demo prints: an API key for the billing system's side, a debtor link per customer for the other.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypedDict

import sqlalchemy as sa

from portal.domain import lifecycle, links, staff
from portal.domain import organizations as orgs
from portal.domain.customers import CustomerInput, get_customer, upsert_customer
from portal.domain.documents import attach_documents
from portal.domain.invoices import InvoiceInput, get_invoice, upsert_invoices
from portal.errors import NotFound
from portal.money import format_minor, parse_minor
from portal.settings import Settings
from portal.storage import DocumentStore, StoredFile
from portal.tokens import TokenService


class BrandingFields(TypedDict):
    """The keyword arguments of organizations.set_branding that the demo sets."""

    color: str
    contact_email: str
    contact_phone: str


DEMO_SLUG = "demo"
DEMO_NAME = "Comptoir Brabançon SRL"
DEMO_BRANDING = BrandingFields(color="#1f6f5c", contact_email="facturation@comptoir-brabancon.example",
                               contact_phone="+32 2 555 01 23")
# scripts/demo revokes only keys of this name, so keys a person made for the demo organization survive.
DEMO_KEY_NAME = "scripts/demo"
CURRENCY = "EUR"


def _address(line1: str, postal_code: str, city: str, country: str) -> dict[str, str]:
    return {"line1": line1, "postal_code": postal_code, "city": city, "country": country}


CUSTOMERS = (
    CustomerInput("C-1001", "Boulangerie Lemaire", "compta@lemaire.example", "fr-BE",
                  _address("Rue de Fer 12", "5000", "Namur", "BE"), "BE0412345678"),
    CustomerInput("C-1002", "Bakkerij Peeters", "boekhouding@peeters.example", "nl-BE",
                  _address("Veldstraat 45", "9000", "Gent", "BE"), "BE0498765432"),
    CustomerInput("C-1003", "Harbour Lane Coffee Ltd", "accounts@harbourlane.example", "en",
                  _address("14 Quay Street", "D02 X285", "Dublin", "IE"), "IE6388047V"),
    CustomerInput("C-1004", "Café Morgenrot", "buchhaltung@morgenrot.example", "de",
                  _address("Kirchstraße 8", "4700", "Eupen", "BE"), "BE0654321987"),
    CustomerInput("C-1005", "Kafferosteriet Malmö AB", "ekonomi@kafferosteriet.example", "sv",
                  _address("Stortorget 3", "211 22", "Malmö", "SE"), "SE556677889901"),
)

REVERSE_CHARGE_EN = "Reverse charge: VAT to be accounted for by the customer (Article 196, Directive 2006/112/EC)."
REVERSE_CHARGE_SV = "Omvänd betalningsskyldighet (artikel 196, direktiv 2006/112/EG)."


@dataclass(frozen=True)
class DemoLine:
    description: str
    quantity: str
    unit_price: str
    vat_rate: str


@dataclass(frozen=True)
class DemoInvoice:
    """An invoice as the demo's billing system would push it; dates are days from today."""

    external_id: str
    customer: str
    number: str | None
    status: str
    lines: tuple[DemoLine, ...]
    issued: int | None = None
    due: int | None = None
    terms: tuple[str, int | None] | None = None
    kind: str = "invoice"
    owes_nothing: bool = False
    vat_mention: str | None = None
    # The billing system has not sent the PDF yet: the invoice shows up in ?has_document=false.
    with_document: bool = True
    # Pushed as a draft without a number, then activated by Quittance, which numbers it from its sequence.
    activated_by_quittance: bool = False


INVOICES = (
    DemoInvoice("DEMO-101", "C-1001", "F-0101", "open", issued=-12, due=18, terms=("net_days", 30), lines=(
        DemoLine("Farine de froment T65, sac de 25 kg", "10", "18.40", "6"),
        DemoLine("Levure fraîche, bloc de 500 g", "24", "1.95", "6"),
        DemoLine("Livraison Namur", "1", "25.00", "21"))),
    DemoInvoice("DEMO-102", "C-1001", "F-0102", "open", issued=-48, due=-18, terms=("net_days", 30), lines=(
        DemoLine("Sucre de canne, sac de 10 kg", "5", "14.90", "6"),
        DemoLine("Moules à pain, lot de 6", "2", "32.50", "21"))),
    DemoInvoice("DEMO-103", "C-1002", "F-0103", "paid", issued=-40, due=-10, terms=("net_days", 30),
                owes_nothing=True, lines=(
        DemoLine("Bloem type 55, zak van 25 kg", "12", "17.90", "6"),
        DemoLine("Levering Gent", "1", "25.00", "21"))),
    DemoInvoice("DEMO-104", "C-1002", "F-0104", "open", issued=-3, terms=("net_days", 30), with_document=False,
                lines=(DemoLine("Roomboter, blok van 1 kg", "20", "8.75", "6"),)),
    DemoInvoice("DEMO-105", "C-1003", "F-0105", "open", issued=-60, due=-30, terms=("net_days", 30),
                vat_mention=REVERSE_CHARGE_EN, lines=(
        DemoLine("Espresso blend, 1 kg bag", "30", "16.50", "0"),
        DemoLine("Grinder service visit", "1", "85.00", "0"))),
    DemoInvoice("DEMO-106", "C-1003", "CN-0001", "open", kind="credit_note", issued=-20, owes_nothing=True,
                vat_mention=REVERSE_CHARGE_EN, lines=(
        DemoLine("Credit for damaged bags delivered with invoice F-0105", "4", "16.50", "0"),)),
    DemoInvoice("DEMO-107", "C-1004", None, "draft", terms=("net_days", 14), with_document=False, lines=(
        DemoLine("Kaffeebohnen Hausmischung, 1 kg", "15", "15.80", "6"),
        DemoLine("Milchaufschäumer, Edelstahl", "2", "24.90", "21"))),
    DemoInvoice("DEMO-108", "C-1004", None, "draft", terms=("net_days", 14), activated_by_quittance=True,
                lines=(DemoLine("Croissants, tiefgekühlt, Karton mit 60 Stück", "3", "27.60", "6"),)),
    DemoInvoice("DEMO-109", "C-1005", "F-0109", "open", issued=-5, terms=("end_of_month", 30),
                vat_mention=REVERSE_CHARGE_SV, lines=(
        DemoLine("Kaffebönor, mellanrost, 1 kg", "40", "15.20", "0"),
        DemoLine("Frakt till Malmö", "1", "65.00", "0"))),
    DemoInvoice("DEMO-110", "C-1005", "F-0110", "paid", issued=-35, due=-5, terms=("net_days", 30),
                owes_nothing=True, vat_mention=REVERSE_CHARGE_SV, lines=(
        DemoLine("Filterpapper, förpackning med 1000 st", "6", "11.40", "0"),)),
)


def _round(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def invoice_input(demo: DemoInvoice, today: dt.date) -> InvoiceInput:
    """The demo invoice in storage form. Totals follow the rule part-activation uses: each line's VAT rounded
    half up, so the demo's figures add up the same way a split draft's would."""
    lines: list[dict[str, Any]] = []
    for line in demo.lines:
        unit_minor = parse_minor(line.unit_price, CURRENCY)
        lines.append({"description": line.description, "quantity": line.quantity, "vat_rate": line.vat_rate,
                      "unit_price_minor": unit_minor, "total_minor": _round(Decimal(line.quantity) * unit_minor)})
    total = sum(line["total_minor"] + _round(Decimal(line["total_minor"]) * Decimal(line["vat_rate"]) / 100)
                for line in lines)

    def day(offset: int | None) -> dt.date | None:
        return None if offset is None else today + dt.timedelta(days=offset)

    return InvoiceInput(
        external_id=demo.external_id, customer=demo.customer, number=demo.number, kind=demo.kind,
        status=demo.status, issue_date=day(demo.issued), due_date=day(demo.due),
        payment_terms=demo.terms[0] if demo.terms else None, payment_terms_days=demo.terms[1] if demo.terms else None,
        currency=CURRENCY, total_minor=total, amount_due_minor=0 if demo.owes_nothing else total, lines=lines,
        vat_mention=demo.vat_mention)


@dataclass
class LoadSummary:
    customers: Counter[str] = field(default_factory=Counter)
    invoices: Counter[str] = field(default_factory=Counter)
    documents: Counter[str] = field(default_factory=Counter)
    # Demo invoices someone changed through the API in a way a resend may not undo; they are left as they are.
    kept: list[str] = field(default_factory=list)

    def describe(self) -> str:
        def counts(counter: Counter[str]) -> str:
            return ", ".join(f"{n} {what}" for what, n in sorted(counter.items())) or "none"

        text = (f"demo organization {DEMO_SLUG!r} ({DEMO_NAME}): customers {counts(self.customers)}; "
                f"invoices {counts(self.invoices)}; documents {counts(self.documents)}")
        return "\n".join([text, *(f"  kept {note}" for note in self.kept)])


def demo_organization(conn: sa.Connection, now: dt.datetime) -> orgs.Organization:
    """The demo organization, created the first time, with the colour and contact its debtors' pages show."""
    try:
        org = orgs.get_organization(conn, DEMO_SLUG)
    except NotFound:
        org = orgs.create_organization(conn, DEMO_SLUG, DEMO_NAME, now)
    orgs.set_branding(conn, org, **DEMO_BRANDING)
    return org


def load_demo(conn: sa.Connection, documents: DocumentStore, now: dt.datetime) -> LoadSummary:
    """Create the demo organization, or bring it back to the demo's data. One transaction (the caller's)."""
    summary = LoadSummary()
    org = demo_organization(conn, now)
    today = now.date()
    for customer in CUSTOMERS:
        summary.customers[upsert_customer(conn, org.id, customer, now)] += 1

    pushed = [demo for demo in INVOICES if not demo.activated_by_quittance]
    outcomes = upsert_invoices(conn, org.id, [invoice_input(demo, today) for demo in pushed], now)
    for outcome in outcomes:
        if outcome.error is None:
            summary.invoices[outcome.result] += 1
        else:
            summary.invoices["kept"] += 1
            summary.kept.append(f"{outcome.external_id}: {outcome.error.detail}")

    for demo in INVOICES:
        if not demo.activated_by_quittance:
            continue
        # Its content now comes from the activation (number, dates), which a resend of the draft would fight:
        # push and activate it once, then leave it alone.
        try:
            get_invoice(conn, org.id, demo.external_id)
            summary.invoices["unchanged"] += 1
        except NotFound:
            upsert_invoices(conn, org.id, [invoice_input(demo, today)], now)
            lifecycle.activate(conn, org.id, demo.external_id, now)
            summary.invoices["created"] += 1

    files = [(demo.external_id, _store_pdf(conn, org, documents, demo.external_id))
             for demo in INVOICES if demo.with_document]
    for attached in attach_documents(conn, org.id, files, now, source="upload"):
        summary.documents[attached.result] += 1
    return summary


def _store_pdf(conn: sa.Connection, org: orgs.Organization, documents: DocumentStore,
               external_id: str) -> StoredFile:
    """Render the invoice as it is stored now (number and dates included) and put the PDF in the store."""
    row = get_invoice(conn, org.id, external_id)
    customer = get_customer(conn, org.id, row.customer_external_id)
    handle, path = documents.temporary_file()
    with handle:
        handle.write(invoice_pdf(row, customer, seller=org.name))
    return documents.store_file(path)


def issue_demo_links(conn: sa.Connection, tokens: TokenService, settings: Settings,
                     now: dt.datetime) -> list[tuple[CustomerInput, str]]:
    """A new debtor link for each demo customer: the link each would find in a reminder email."""
    org = orgs.get_organization(conn, DEMO_SLUG)
    return [(customer, links.issue_url(conn, tokens, settings, org.id, customer.external_id, now)[0])
            for customer in CUSTOMERS]


def rotate_demo_key(conn: sa.Connection, now: dt.datetime) -> str:
    """A new API key for the demo organization. Keys are stored hashed and so can be shown only once: each run
    of scripts/demo revokes the key it printed last time and prints a new one."""
    org = orgs.get_organization(conn, DEMO_SLUG)
    for key in orgs.list_api_keys(conn, org):
        if key.name == DEMO_KEY_NAME and key.revoked_at is None:
            orgs.revoke_api_key(conn, org, key.id, now)
    return orgs.create_api_key(conn, org, DEMO_KEY_NAME, now)[1]


DEMO_STAFF_EMAIL = "finance@comptoir-brabancon.example"


def reset_demo_staff(conn: sa.Connection, now: dt.datetime) -> tuple[str, str]:
    """The demo's finance account (role finance) with a new random password, printed by scripts/demo: like the
    API key, each run replaces the one it printed last time (and signs the old sessions out)."""
    org = orgs.get_organization(conn, DEMO_SLUG)
    person = staff.person_by_email(conn, DEMO_STAFF_EMAIL)
    if person is None or staff.membership(conn, person.id, org.id) is None:
        person = staff.add_staff(conn, org.id, DEMO_STAFF_EMAIL, "finance", now, name="Demo finance")
    password = secrets.token_urlsafe(12)
    staff.set_password(conn, person.id, password, now, organization_id=org.id)
    return DEMO_STAFF_EMAIL, password


LABELS = {
    "fr": {"invoice": "Facture", "credit_note": "Note de crédit", "issued": "Date", "due": "Échéance",
           "vat": "TVA", "total": "Total TVAC", "amount_due": "Montant dû"},
    "nl": {"invoice": "Factuur", "credit_note": "Creditnota", "issued": "Datum", "due": "Vervaldatum",
           "vat": "btw", "total": "Totaal incl. btw", "amount_due": "Te betalen"},
    "en": {"invoice": "Invoice", "credit_note": "Credit note", "issued": "Date", "due": "Due date",
           "vat": "VAT", "total": "Total incl. VAT", "amount_due": "Amount due"},
    "de": {"invoice": "Rechnung", "credit_note": "Gutschrift", "issued": "Datum", "due": "Fällig am",
           "vat": "MwSt.", "total": "Gesamt inkl. MwSt.", "amount_due": "Offener Betrag"},
    "sv": {"invoice": "Faktura", "credit_note": "Kreditfaktura", "issued": "Datum", "due": "Förfallodatum",
           "vat": "moms", "total": "Totalt inkl. moms", "amount_due": "Att betala"},
}

PdfLine = tuple[str, int, bool]  # text, font size, bold


def invoice_pdf(invoice: sa.Row[Any], customer: sa.Row[Any], *, seller: str) -> bytes:
    """The stored invoice as the one-page document a debtor downloads, in the customer's language."""
    labels = LABELS[customer.locale.split("-")[0]]
    currency = invoice.currency

    def money(minor: int) -> str:
        return f"{format_minor(minor, currency)} {currency}"

    address = customer.address or {}
    lines: list[PdfLine] = [
        (seller, 12, True),
        (f"{labels[invoice.kind]} {invoice.number or invoice.external_id}", 20, True),
        (customer.name, 11, False),
        (f"{address.get('line1', '')}, {address.get('postal_code', '')} {address.get('city', '')}", 11, False),
        (f"{labels['issued']}: {invoice.issue_date}", 11, False),
    ]
    if invoice.due_date is not None:
        lines.append((f"{labels['due']}: {invoice.due_date}", 11, False))
    lines.append(("", 11, False))
    for line in invoice.lines:
        lines.append((f"{line['description']}    {line['quantity']} x {money(line['unit_price_minor'])}"
                      f"    {labels['vat']} {line['vat_rate']}%    {money(line['total_minor'])}", 10, False))
    lines.append(("", 11, False))
    lines.append((f"{labels['total']}: {money(invoice.total_minor)}", 12, True))
    lines.append((f"{labels['amount_due']}: {money(invoice.amount_due_minor)}", 12, True))
    if invoice.vat_mention:
        lines.append((invoice.vat_mention, 9, False))
    return minimal_pdf(lines)


def sample_pdf(number: str) -> bytes:
    """A stand-in invoice PDF for trying the document upload by hand."""
    return minimal_pdf([("Sample document for Quittance", 12, True), (f"Invoice {number}", 20, True)])


def minimal_pdf(lines: Sequence[PdfLine]) -> bytes:
    """A one-page A4 PDF 1.4 with these lines of text from the top. It uses the standard Helvetica fonts, which
    every reader has, so nothing is embedded; their WinAnsiEncoding (cp1252) covers the letters of the five
    demo languages. No dates or ids inside: the same text gives the same bytes, so a reload stores nothing."""
    commands = []
    y = 800
    for text, size, bold in lines:
        y -= size + 8
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        commands.append(f"BT /{'F2' if bold else 'F1'} {size} Tf 56 {y} Td ({escaped}) Tj ET")
    stream = "\n".join(commands).encode("cp1252")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    # The binary comment line tells transfer tools the file is binary (PDF 1.4, section 3.4.1).
    pdf = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(pdf)
