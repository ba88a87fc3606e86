"""The real product for the browser tests: `portal serve` in its own process on a free loopback port, with a
throwaway database and document store, filled through the machine API over HTTP as a billing system would fill
it; the Mollie and Stripe emulators in this process (their own threads and loopback ports), which
the server's real SDKs call and which deliver webhooks to the server over real HTTP; and Chromium (Debian's,
launched by path) driven by Playwright.

Every test runs once per database backend (`--db`, see the conftest.py at the top of the repository): on a
SQLite file, and on a database of its own in the run's PostgreSQL, which tests/ shares. Each backend has its own
migrated database, server process and emulators, started once for all the tests of that backend.

Dates are relative to today (the server runs on the system clock), with margins of days, so the same
invoices are overdue, due soon or open on every run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from portal.db.invoices import invoices as invoices_table
from portal.db.organizations import organizations
from portal.demo import minimal_pdf as demo_pdf
from quittance_emulators.mollie import MollieEmulator
from quittance_emulators.stripe import StripeEmulator
from tests.support.postgres import database_of_its_own

REPO = Path(__file__).resolve().parent.parent
AXE_JS = REPO / "e2e" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("PORTAL_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# Every wait in a test is bounded by this (a local page answers in milliseconds).
TIMEOUT_MS = 5_000
ORG_SLUG = "harbour"
ORG_NAME = "Harbour Supplies"
# The server's provider settings; the emulators accept only these keys.
MOLLIE_KEY = "test_quittancee2e"
STRIPE_KEY = "sk_test_quittance_e2e"
STRIPE_WEBHOOK_SECRET = "whsec_quittance_e2e"


# --- data -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    external_id: str
    name: str
    locale: str


@dataclass(frozen=True)
class Invoice:
    external_id: str
    customer: str
    number: str
    status: str
    issued: int  # days from today
    due: int | None
    net: str  # one line at 21 % VAT; total = net + VAT, as the billing system rounded it
    total: str
    amount_due: str | None = None
    kind: str = "invoice"
    with_pdf: bool = False
    title: str | None = None


MAIN = Customer("C1", "Brasserie Dupont", "en-IE")
OTHER = Customer("C2", "Globex Trading", "en-IE")  # none of its invoices may ever show on C1's pages
REVOKED = Customer("C3", "Café Lumière", "en-IE")  # its links get revoked; kept apart from C1's

INVOICES = (
    Invoice("INV-101", "C1", "2026-0101", "open", -70, -40, "1000.00", "1210.00", with_pdf=True,
            title="Kitchen equipment, spring order"),
    Invoice("INV-102", "C1", "2026-0102", "open", -40, -10, "206.61", "250.00", amount_due="100.00"),
    Invoice("INV-103", "C1", "2026-0103", "open", -10, 20, "500.00", "605.00", with_pdf=True),
    Invoice("INV-104", "C1", "2026-0104", "open", -25, 3, "82.64", "99.99"),
    Invoice("CN-001", "C1", "CN-0001", "open", -15, None, "50.00", "60.50", amount_due="0.00", kind="credit_note",
            with_pdf=True, title="Credit for two damaged crates on 2026-0101"),
    Invoice("INV-091", "C1", "2026-0091", "paid", -100, -70, "100.00", "121.00", with_pdf=True),
    Invoice("INV-092", "C1", "2026-0092", "cancelled", -90, -60, "200.00", "242.00"),
    Invoice("INV-090", "C1", "2025-0090", "paid", -400, -370, "400.00", "484.00", with_pdf=True),
    Invoice("INV-099", "C1", "2026-0099", "draft", -1, 29, "10.00", "12.10"),
    Invoice("INV-201", "C2", "2026-0201", "open", -50, -20, "8263.64", "9999.00", with_pdf=True),
    Invoice("INV-202", "C2", "2026-0202", "paid", -30, 0, "100.00", "121.00", with_pdf=True),
    Invoice("INV-301", "C3", "2026-0301", "open", -5, 25, "123.97", "150.00", with_pdf=True),
)


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF that says `text` (the demo's builder); different text, different bytes."""
    return demo_pdf([(text, 18, False)])


# --- the server -------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Providers:
    """The payment provider emulators the server talks to."""

    mollie: MollieEmulator
    stripe: StripeEmulator


@dataclass
class PortalServer:
    """A running portal with the data above: its address, an API client, and what was pushed."""

    base_url: str
    api: httpx.Client
    today: dt.date
    log_path: Path
    pdfs: dict[str, bytes] = field(default_factory=dict)  # invoice number -> the bytes pushed
    ids: dict[str, int] = field(default_factory=dict)  # invoice number -> id in portal URLs
    providers: Providers | None = None
    # Every secret the server was given or handed out (e2e/test_zz_secrets_in_logs.py looks for each in its log).
    secrets: list[str] = field(default_factory=list)
    # The server's environment: `command` runs `portal` against the same database, keys and settings.
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`portal ARGS` as the server's operator would run it (same environment, same working directory)."""
        return subprocess.run([str(Path(sys.executable).parent / "portal"), *args], input=stdin, text=True,
                              capture_output=True, cwd=self.log_path.parent, env=self.env, timeout=60)

    def link(self, customer: str = MAIN.external_id, invoices: list[str] | None = None) -> str:
        """A fresh portal link, issued through the machine API."""
        body: dict[str, Any] = {} if invoices is None else {"invoices": invoices}
        response = self.api.post(f"/api/v1/customers/{customer}/portal-links", json=body)
        assert response.status_code == 201, response.text
        url = str(response.json()["url"])
        assert url.startswith(f"{self.base_url}/l/"), url
        self.secrets.append(url.rsplit("/", 1)[1])
        return url

    def revoke(self, customer: str) -> int:
        response = self.api.post(f"/api/v1/customers/{customer}/portal-links/revoke")
        assert response.status_code == 200, response.text
        return int(response.json()["revoked"])

    def date(self, offset: int) -> dt.date:
        return self.today + dt.timedelta(days=offset)


def _portal_env(workdir: Path, database_url: str, base_url: str,
                providers: Providers | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update({
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_STORAGE_DIR": str(workdir / "documents"),
        # The server's real loopback address: links, return pages and the webhook URLs the providers call.
        "PORTAL_BASE_URL": base_url,
        "PORTAL_SECRET_KEYS": secrets.token_urlsafe(32),
        "PORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PORTAL_METRICS_TOKEN": secrets.token_urlsafe(24),
        # Everything logged, as an operator chasing a problem would: still no secret may appear.
        "PORTAL_LOG_LEVEL": "DEBUG",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    if providers is not None:
        env.update({
            "PORTAL_MOLLIE_API_KEY": MOLLIE_KEY,
            "PORTAL_MOLLIE_API_URL": providers.mollie.base_url,
            "PORTAL_STRIPE_API_KEY": STRIPE_KEY,
            "PORTAL_STRIPE_API_URL": providers.stripe.base_url,
            "PORTAL_STRIPE_WEBHOOK_SECRETS": STRIPE_WEBHOOK_SECRET,
        })
    return env


def _portal_command(env: dict[str, str], workdir: Path, *args: str) -> str:
    # The `portal` script next to the interpreter running pytest, so the tests use the same install. The
    # working directory is the temporary one, so that a developer's `.env` in the repo changes nothing.
    done = subprocess.run([str(Path(sys.executable).parent / "portal"), *args], env=env, cwd=workdir,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"portal {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGINT is uvicorn's graceful shutdown; kill only if it hangs.
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"portal serve exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                if client.get(f"{base_url}/api/v1/openapi.json").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"portal serve not ready after {timeout:.0f}s:\n{_tail(log_path)}")


def _push_data(server: PortalServer) -> None:
    api = server.api
    for customer in (MAIN, OTHER, REVOKED):
        response = api.put(f"/api/v1/customers/{customer.external_id}",
                           json={"name": customer.name, "email": f"accounts@{customer.external_id.lower()}.example",
                                 "locale": customer.locale})
        assert response.status_code in (200, 201), response.text
    for invoice in INVOICES:
        body: dict[str, Any] = {
            "customer": invoice.customer, "number": invoice.number, "kind": invoice.kind, "status": invoice.status,
            "issue_date": server.date(invoice.issued).isoformat(), "currency": "EUR", "total": invoice.total,
            "lines": [{"description": "Catering supplies" if invoice.kind == "invoice" else "Damaged crates",
                       "quantity": "1", "unit_price": invoice.net, "vat_rate": "21", "total": invoice.net}],
        }
        if invoice.due is not None:
            body["due_date"] = server.date(invoice.due).isoformat()
        if invoice.amount_due is not None:
            body["amount_due"] = invoice.amount_due
        if invoice.title:
            body["title"] = invoice.title
        response = api.put(f"/api/v1/invoices/{invoice.external_id}", json=body)
        assert response.status_code == 201, response.text
        if invoice.with_pdf:
            pdf = minimal_pdf(f"{ORG_NAME} - invoice {invoice.number}")
            response = api.put(f"/api/v1/invoices/{invoice.external_id}/document", content=pdf,
                               headers={"Content-Type": "application/pdf"})
            assert response.status_code == 201, response.text
            server.pdfs[invoice.number] = pdf


def _discover_ids(server: PortalServer) -> None:
    """Invoice ids as the portal's URLs use them, read off each customer's history page."""
    for customer in (MAIN, OTHER, REVOKED):
        with httpx.Client(trust_env=False, timeout=10, follow_redirects=True) as client:
            page = client.get(server.link(customer.external_id))
            assert page.status_code == 200 and str(page.url).endswith("/portal"), page.text[:500]
            for invoice_id, label in re.findall(r'<a href="/portal/invoices/(\d+)">([^<]+)</a>', page.text):
                server.ids[label.split()[-1]] = int(invoice_id)
    shown = {i.number for i in INVOICES if i.status != "draft"}
    assert set(server.ids) == shown, f"history pages show {sorted(server.ids)}, expected {sorted(shown)}"


def _check_stored_in(database_url: str) -> None:
    """The server keeps what the API received in this backend's database, not in a default one elsewhere."""
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            numbers = conn.execute(sa.select(invoices_table.c.number).join(organizations).where(
                organizations.c.slug == ORG_SLUG)).scalars().all()
    finally:
        engine.dispose()
    assert sorted(numbers) == sorted(i.number for i in INVOICES), numbers


@pytest.fixture(scope="session")
def providers(backend: str) -> Iterator[Providers]:
    """Mollie and Stripe emulators for the tests of one backend, served from threads of this process on loopback
    ports. Their retry clocks are compressed (an hour a second), so a refused webhook is retried within the test.
    Each backend's server has emulators of its own: Stripe sends every event to every endpoint registered with
    it, and none may go to the other backend's server."""
    mollie = MollieEmulator({MOLLIE_KEY})
    stripe = StripeEmulator({STRIPE_KEY}, webhook_secrets=[STRIPE_WEBHOOK_SECRET])
    try:
        mollie.start()
        stripe.start()
        yield Providers(mollie, stripe)
    finally:
        stripe.stop()
        mollie.stop()


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database for one backend's server: a SQLite file, or a new database in the run's PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('e2e-sqlite') / 'portal.db'}"
        return
    with database_of_its_own(request.getfixturevalue("postgresql_url"), "e2e") as url:
        yield url


@pytest.fixture(scope="session")
def portal(tmp_path_factory: pytest.TempPathFactory, providers: Providers, database_url: str,
           backend: str) -> Iterator[PortalServer]:
    workdir = tmp_path_factory.mktemp(f"portal-{backend}")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = _portal_env(workdir, database_url, base_url, providers)
    # Stripe sends every event to the endpoints registered in its dashboard; Mollie calls the webhookUrl the
    # server puts in each payment.
    providers.stripe.add_webhook_endpoint(f"{base_url}/webhooks/stripe/{ORG_SLUG}", STRIPE_WEBHOOK_SECRET)
    _portal_command(env, workdir, "db", "upgrade")
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "portal"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The tenant is made while the server starts (it needs only the schema).
        _portal_command(env, workdir, "org", "create", ORG_SLUG, "--name", ORG_NAME)
        key = _portal_command(env, workdir, "apikey", "create", ORG_SLUG, "--name", "e2e").strip().splitlines()[-1]
        _wait_until_ready(base_url, process, log_path)
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10,
                          trust_env=False) as api:
            server = PortalServer(base_url, api, dt.datetime.now(dt.UTC).date(), log_path, providers=providers,
                                  env=env)
            server.secrets += [key, MOLLIE_KEY, STRIPE_KEY, STRIPE_WEBHOOK_SECRET, env["PORTAL_SECRET_KEYS"],
                               env["PORTAL_ENCRYPTION_KEYS"], env["PORTAL_METRICS_TOKEN"]]
            _push_data(server)
            _discover_ids(server)
            _check_stored_in(database_url)
            yield server
    finally:
        _stop(process)
        if process.returncode not in (0, -signal.SIGINT):
            print(f"portal serve exited with {process.returncode}:\n{_tail(log_path)}", file=sys.stderr)


# --- the browser ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _fresh_screenshots() -> None:
    """Screenshots of this run only: none left over from pages a test no longer reaches."""
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (scripts/install --test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


NewContext = Callable[..., BrowserContext]
# A page answered 401, 404 or 422 is expected in some tests, and Chromium logs any 4xx or 5xx as a console
# error. The tests check the status and content of the pages they open, and on_response below reports any
# subresource that fails, so these messages say nothing more.
_STATUS_CONSOLE = re.compile(r"^Failed to load resource: the server responded with a status of \d{3} ")


def _watch(context: BrowserContext, problems: list[str]) -> None:
    """Record what a debtor would not see but should not happen: console errors (a CSP violation is one),
    script errors, and subresources (stylesheets, images) that fail to load."""
    def on_console(message: Any) -> None:
        if message.type == "error" and not _STATUS_CONSOLE.match(message.text):
            problems.append(f"console error on {message.page.url if message.page else '?'}: {message.text}")

    def on_response(response: Any) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            problems.append(f"{response.request.resource_type} {response.url} answered {response.status}")

    context.on("console", on_console)
    context.on("weberror", lambda error: problems.append(f"script error: {error.error}"))
    context.on("response", on_response)


@pytest.fixture
def new_context(browser: Browser, portal: PortalServer) -> Iterator[NewContext]:
    """Fresh browser contexts (no cookies), closed after the test. Options go to Browser.new_context.
    The test fails if a page logged a console error or a subresource failed to load."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def make(**options: Any) -> BrowserContext:
        settings: dict[str, Any] = {"base_url": portal.base_url, "locale": "en-IE", "timezone_id": "UTC",
                                    "viewport": {"width": 1280, "height": 900}, "accept_downloads": True}
        context = browser.new_context(**{**settings, **options})
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        _watch(context, problems)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert not problems, "the browser reported:\n" + "\n".join(problems)


@pytest.fixture(params=["js", "nojs"])
def context(request: pytest.FixtureRequest, new_context: NewContext) -> BrowserContext:
    """The main flow runs twice: as most debtors see it, and with JavaScript off (the pages need none)."""
    return new_context(java_script_enabled=request.param == "js")


def open_link(context: BrowserContext, url: str) -> Page:
    """Open a portal link in a new tab as a debtor clicking it in an email; returns the page it lands on."""
    page = context.new_page()
    page.goto(url)
    return page


def open_portal(context: BrowserContext, portal: PortalServer, customer: str = MAIN.external_id,
                invoices: list[str] | None = None) -> Page:
    """Open a fresh link (issued now through the API) and check the landing: the debtor is on /portal, and
    the token is gone from the address bar, and so from the browser history and any Referer."""
    url = portal.link(customer, invoices)
    page = open_link(context, url)
    assert page.url == f"{portal.base_url}/portal"
    assert url.rsplit("/", 1)[1] not in page.url
    return page


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG under test-artifacts/screenshots/, kept for people to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --- accessibility ----------------------------------------------------------------------------------------

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target, html: n.html, summary: n.failureSummary}))}));
}"""
BLOCKING_IMPACTS = {"serious", "critical"}


def axe_problems(page: Page, name: str) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now and return its serious or critical violations (all violations
    are printed). Injecting axe needs a context made with bypass_csp=True: our CSP forbids injected scripts."""
    assert AXE_JS.exists(), f"{AXE_JS} missing: run `npm ci --prefix e2e` (scripts/install --test does)"
    page.add_script_tag(path=str(AXE_JS))
    violations: list[dict[str, Any]] = page.evaluate(AXE_RUN)
    if violations:
        print(f"axe on {name} ({page.url}):\n{json.dumps(violations, indent=2, ensure_ascii=False)}")
    return [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
