"""The `portal` command: serve, db upgrade, the organization / API key / staff admin, and the demo data."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import sqlalchemy

from portal.clock import SystemClock
from portal.db import Database
from portal.db.migrate import upgrade
from portal.demo import DEMO_SLUG, issue_demo_links, load_demo, reset_demo_staff, rotate_demo_key, sample_pdf
from portal.domain import organizations as orgs
from portal.domain.links import issue_url, revoke_links
from portal.encryption import EncryptionKeyError, SecretBox, generate_key
from portal.errors import QuittanceError
from portal.logs import configure_logging, logging_config
from portal.settings import Settings, SettingsError
from portal.storage import StorageError, open_store
from portal.tokens import TokenService


def _settings() -> Settings:
    """The settings from the environment; a bad PORTAL_* value ends the command with one line naming the
    variable and what it accepts (status 2, as for any other bad usage), not a traceback."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _database() -> Database:
    return Database.from_url(_settings().database_url)


@click.group()
def main() -> None:
    """Quittance: customer invoice and payment portal."""
    settings = _settings()  # every command stops here on a bad setting, before it does anything
    configure_logging(settings.log_format, settings.log_level)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, envvar="PORT",
              show_envvar=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, envvar="WEB_CONCURRENCY",
              show_envvar=True, help="Server processes. See docs/operations.md for SQLite.")
@click.option("--keep-alive", type=click.IntRange(1), default=5, show_default=True,
              envvar="PORTAL_KEEP_ALIVE_SECONDS", show_envvar=True,
              help="Seconds an idle keep-alive connection is kept open.")
@click.option("--graceful-timeout", type=click.IntRange(1), default=30, show_default=True,
              envvar="PORTAL_GRACEFUL_TIMEOUT_SECONDS", show_envvar=True,
              help="Seconds in-flight requests get to finish after SIGTERM.")
@click.option("--worker-timeout", type=click.IntRange(1), default=30, show_default=True,
              envvar="PORTAL_WORKER_TIMEOUT_SECONDS", show_envvar=True,
              help="A server process whose event loop is stuck this long is replaced.")
def serve(host: str, port: int, workers: int, keep_alive: int, graceful_timeout: int, worker_timeout: int) -> None:
    """Run the web server: gunicorn managing uvicorn processes (docs/operations.md)."""
    from portal.web.server import Timeouts
    from portal.web.server import serve as serve_web

    settings = _settings()
    _check_before_start(settings)
    if not settings.secret_keys:
        click.echo("warning: PORTAL_SECRET_KEYS is not set; debtor links are signed with a development key that "
                   "anyone can read in the source. Set it before real debtors get links.", err=True)
    sys.exit(serve_web(host, port, workers,
                       timeouts=Timeouts(keep_alive=keep_alive, graceful=graceful_timeout, worker=worker_timeout),
                       logging=logging_config(settings.log_format, settings.log_level)))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the latest schema (safe to run on every release)."""
    settings = _settings()
    upgrade(settings.database_url)
    click.echo("database is at the latest schema")


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(path: Path) -> None:
    """Write a consistent copy of the SQLite database to PATH (a new file), safe while the server runs."""
    from portal.db.backup import BackupError, backup_sqlite

    try:
        size = backup_sqlite(_settings().database_url, path)
    except (BackupError, sqlite3.Error) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"backed up to {path} ({size:,} bytes); documents are backed up separately (docs/operations.md)")


@main.group()
def org() -> None:
    """Organizations (tenants)."""


@org.command("create")
@click.argument("slug")
@click.option("--name", required=True)
def org_create(slug: str, name: str) -> None:
    organization = _run(orgs.create_organization, slug, name, SystemClock().now())
    click.echo(f"created organization {organization.slug} ({organization.name})")


@org.command("list")
def org_list() -> None:
    for organization in _run(orgs.list_organizations):
        click.echo(f"{organization.slug}\t{organization.name}")


@main.group()
def apikey() -> None:
    """API keys for the machine API."""


@apikey.command("create")
@click.argument("org_slug")
@click.option("--name", required=True, help="What the key is for, e.g. the billing system's name.")
def apikey_create(org_slug: str, name: str) -> None:
    """Create a key and print it once; only its hash is stored."""
    def create(conn: sqlalchemy.Connection) -> tuple[orgs.ApiKeyInfo, str]:
        return orgs.create_api_key(conn, orgs.get_organization(conn, org_slug), name, SystemClock().now())

    info, key = _run(create)
    click.echo(f"API key {info.id} ({info.name}) for {org_slug}; shown only now, store it safely:", err=True)
    click.echo(key)


@apikey.command("list")
@click.argument("org_slug")
def apikey_list(org_slug: str) -> None:
    keys = _run(lambda conn: orgs.list_api_keys(conn, orgs.get_organization(conn, org_slug)))
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(f"{key.id}\t{key.prefix}…\t{key.name}\t{key.created_at:%Y-%m-%d %H:%M}\t{state}")


@apikey.command("revoke")
@click.argument("org_slug")
@click.argument("key_id", type=int)
def apikey_revoke(org_slug: str, key_id: int) -> None:
    _run(lambda conn: orgs.revoke_api_key(conn, orgs.get_organization(conn, org_slug), key_id,
                                         SystemClock().now()))
    click.echo(f"revoked key {key_id}")


@main.group()
def staff() -> None:
    """Staff accounts of the back office (/staff)."""


@staff.command("create")
@click.argument("org_slug")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["admin", "finance", "viewer"]))
@click.option("--name", help="The person's name, shown in the back office.")
@click.option("--locale", default="en", show_default=True, help="Language of the back office, e.g. fr-BE.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of "
              "printing a link where the person sets it.")
def staff_create(org_slug: str, email: str, role: str, name: str | None, locale: str, password_stdin: bool) -> None:
    """Make EMAIL staff of ORG_SLUG with a role, and print a one-time link (valid 24 hours) where they set their
    password. Someone who is staff of another organization already keeps their password."""
    from portal.domain import staff as staff_domain

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        problem = staff_domain.password_problem(password)
        if problem is not None:
            click.echo(f"error: the password is {problem.replace('_', ' ')} "
                       f"({staff_domain.PASSWORD_MIN}-{staff_domain.PASSWORD_MAX} characters)", err=True)
            sys.exit(1)
    now = SystemClock().now()

    def create(conn: sqlalchemy.Connection) -> tuple[Any, str | None]:
        org_id = orgs.get_organization(conn, org_slug).id
        person = staff_domain.add_staff(conn, org_id, email, role, now, name=name, locale=locale)
        if password is not None:
            staff_domain.set_password(conn, person.id, password, now, organization_id=org_id)
            return person, None
        if person.has_password:
            return person, None
        return person, staff_domain.issue_token(conn, person.id, staff_domain.SET_PASSWORD, now)

    person, token = _run(create)
    click.echo(f"{person.email} is {role} of {org_slug}")
    if token is not None:
        click.echo("one-time link to set the password, valid 24 hours:", err=True)
        click.echo(f"{_settings().base_url}/staff/password/{token}")
    elif password is None:
        click.echo("they sign in with the password they already have", err=True)


@staff.command("list")
@click.argument("org_slug")
def staff_list(org_slug: str) -> None:
    from portal.domain import staff as staff_domain

    rows = _run(lambda conn: staff_domain.staff_of(conn, orgs.get_organization(conn, org_slug).id))
    for row in rows:
        state = "disabled" if row.disabled else ("active" if row.person.has_password else "invited")
        totp = "totp" if row.person.totp_enabled else "-"
        click.echo(f"{row.person.email}\t{row.role}\t{state}\t{totp}")


@staff.command("role")
@click.argument("org_slug")
@click.argument("email")
@click.argument("role", type=click.Choice(["admin", "finance", "viewer"]))
def staff_role(org_slug: str, email: str, role: str) -> None:
    """Change a person's role; their sessions end."""
    from portal.domain import staff as staff_domain

    _run(lambda conn: staff_domain.change_role(conn, orgs.get_organization(conn, org_slug).id, email, role,
                                               SystemClock().now()))
    click.echo(f"{email} is {role} of {org_slug}")


@staff.command("disable")
@click.argument("org_slug")
@click.argument("email")
def staff_disable(org_slug: str, email: str) -> None:
    """Take a person's access to ORG_SLUG away; their sessions end at once."""
    from portal.domain import staff as staff_domain

    _run(lambda conn: staff_domain.disable(conn, orgs.get_organization(conn, org_slug).id, email,
                                           SystemClock().now()))
    click.echo(f"{email} can no longer sign in to {org_slug}")


@main.group()
def demo() -> None:
    """The demo organization that scripts/demo serves."""


@demo.command("load")
def demo_load() -> None:
    """Create the demo organization with its customers, invoices and PDFs, or bring it back to them.

    Safe to run again: the same day, nothing changes."""
    summary = _run(load_demo, open_store(_settings().document_store_url), SystemClock().now())
    click.echo(summary.describe())


@demo.command("key")
def demo_key() -> None:
    """Print a new API key for the demo organization, revoking the one this command printed last time."""
    click.echo(_run(rotate_demo_key, SystemClock().now()))


@demo.command("staff")
def demo_staff() -> None:
    """Print the demo finance account's email and a new password (the one printed last time stops working)."""
    email, password = _run(reset_demo_staff, SystemClock().now())
    click.echo(f"{email}\t{password}")


@demo.command("links")
def demo_links() -> None:
    """Print a fresh debtor portal link for each demo customer, one per language."""
    settings = _settings()
    tokens = TokenService(settings.signing_keys, SystemClock())
    for customer, url in _run(issue_demo_links, tokens, settings, SystemClock().now()):
        click.echo(f"{customer.locale:<6} {customer.name:<24} {url}")


@demo.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, envvar="PORT",
              show_envvar=True)
def demo_serve(host: str, port: int) -> None:
    """Serve the app with local Mollie and Stripe emulators (test mode) as its payment providers, so that a
    demo invoice can be paid end to end on this machine. Never for real payments."""
    from portal.app import create_app
    # The emulators are a development package of this repository (installed with it), not part of portal.
    from quittance_emulators.mollie import MollieEmulator
    from quittance_emulators.stripe import StripeEmulator

    from portal.web.server import serve as serve_web

    base_url = f"http://{host}:{port}"
    mollie = MollieEmulator({"test_quittance_demo"}).start()
    stripe = StripeEmulator({"sk_test_quittance_demo"}).start()
    secret = stripe.add_webhook_endpoint(f"{base_url}/webhooks/stripe/{DEMO_SLUG}")
    settings = dataclasses.replace(
        _settings(), base_url=base_url, mollie_api_key="test_quittance_demo", mollie_api_url=mollie.base_url,
        stripe_api_key="sk_test_quittance_demo", stripe_api_url=stripe.base_url, stripe_webhook_secrets=(secret,))
    click.echo(f"test-mode payment emulators: Mollie on {mollie.base_url}, Stripe on {stripe.base_url}", err=True)
    try:
        # One server process, forked from this one; it reaches the emulators (threads of this process) over loopback.
        status = serve_web(host, port, 1, create_app(settings))
    finally:
        mollie.stop()
        stripe.stop()
    sys.exit(status)


@demo.command("pdf")
@click.argument("number")
def demo_pdf(number: str) -> None:
    """Write a small sample invoice PDF to standard output, to try the document upload with."""
    sys.stdout.buffer.write(sample_pdf(number))  # click.get_binary_stream is deprecated (gone in Click 9)


@main.group()
def link() -> None:
    """Signed links to the debtor portal."""


@link.command("create")
@click.argument("org_slug")
@click.argument("customer")
@click.option("--days", type=int, default=None, help="Lifetime in days (default 90, at most 365).")
@click.option("--invoice", "invoices", multiple=True, help="Show only this invoice (repeatable).")
def link_create(org_slug: str, customer: str, days: int | None, invoices: tuple[str, ...]) -> None:
    """Print a new portal link for a customer (its external id)."""
    settings = _settings()
    tokens = TokenService(settings.signing_keys, SystemClock())
    url, expires_at = _run(lambda conn: issue_url(
        conn, tokens, settings, orgs.get_organization(conn, org_slug).id, customer, SystemClock().now(),
        days=days, invoice_external_ids=list(invoices) or None))
    click.echo(f"link valid until {expires_at:%Y-%m-%d %H:%M} UTC:", err=True)
    click.echo(url)


@link.command("revoke")
@click.argument("org_slug")
@click.argument("customer")
def link_revoke(org_slug: str, customer: str) -> None:
    """Revoke every link issued to a customer until now, and the sessions opened with them."""
    count = _run(lambda conn: revoke_links(conn, orgs.get_organization(conn, org_slug).id, customer,
                                           SystemClock().now()))
    click.echo(f"revoked {count} link(s)")


@org.command("brand")
@click.argument("org_slug")
@click.option("--color", help="Brand colour as #rrggbb.")
@click.option("--contact-email", help="Where debtors ask for help or a fresh link.")
@click.option("--contact-phone")
@click.option("--logo", type=click.Path(exists=True, dir_okay=False), help="A PNG or JPEG logo.")
def org_brand(org_slug: str, color: str | None, contact_email: str | None, contact_phone: str | None,
              logo: str | None) -> None:
    """Set what debtors see: colour, logo and contact."""
    logo_file = None
    if logo is not None:
        logo_file = _store_logo(logo)
    _run(lambda conn: orgs.set_branding(conn, orgs.get_organization(conn, org_slug), color=color,
                                   contact_email=contact_email, contact_phone=contact_phone, logo=logo_file))
    click.echo(f"branding of {org_slug} updated")


@main.group()
def documents() -> None:
    """Stored PDFs and logos."""


@documents.command("migrate")
@click.option("--to", "target_url", required=True, metavar="URL",
              help="The store to copy into: a directory, file:///path or s3://bucket/prefix.")
def documents_migrate(target_url: str) -> None:
    """Copy every stored document from the configured store (PORTAL_STORAGE_URL) to another, verifying each by
    its SHA-256. Running it again copies only what is missing. Then point PORTAL_STORAGE_URL at the target."""
    from portal.storage.migrate import migrate_documents

    source = open_store(_settings().document_store_url)
    try:
        target = open_store(target_url)
        summary = migrate_documents(source, target)
    except (ValueError, StorageError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{summary.copied} copied, {summary.already_there} already there, "
               f"{summary.copied + summary.already_there} verified by SHA-256 in {target!r}")
    if summary.mismatched:
        click.echo(f"error: {len(summary.mismatched)} documents in the target do not match their hash: "
                   + ", ".join(summary.mismatched), err=True)
        sys.exit(1)


@main.command("reconcile")
@click.option("--quiet-minutes", type=int, default=15, show_default=True,
              help="Ask about checkouts that have heard nothing for this long.")
def reconcile_command(quiet_minutes: int) -> None:
    """Ask the payment providers about checkouts whose webhooks may be lost, and apply what they say."""
    import datetime as dt
    import functools

    import anyio

    from portal.providers.registry import ProviderRegistry
    from portal.reconcile import reconcile

    settings = _settings()
    database = _database()
    try:
        report = anyio.run(functools.partial(reconcile, database, ProviderRegistry(settings), settings,
                                             SystemClock().now(), quiet_for=dt.timedelta(minutes=quiet_minutes)))
    finally:
        database.dispose()
    click.echo(f"asked {report.asked} checkout(s): {report.changed} changed, {report.unreachable} unreachable")


@main.group()
def payments() -> None:
    """Online payment settings of an organization."""


@payments.command("configure")
@click.argument("org_slug")
@click.option("--providers", help="Comma-separated: mollie,stripe.")
@click.option("--mollie-key", help="Mollie API key (live_… or test_…).")
@click.option("--mollie-methods", help="Comma-separated, e.g. ideal,bancontact,banktransfer,paypal.")
@click.option("--stripe-key", help="Stripe secret key.")
@click.option("--stripe-webhook-secret", "stripe_secrets", multiple=True,
              help="Webhook signing secret (repeat during a rotation; the first is the newest).")
@click.option("--partial-payments/--no-partial-payments", "partial", default=None,
              help="Whether debtors may pay less than the invoices they select.")
@click.option("--partial-minimum", help="The least a partial payment may be, e.g. 10.00.")
@click.option("--currency", help="Currency of the minimum (default: that of most of the organization's invoices).")
def payments_configure(org_slug: str, providers: str | None, mollie_key: str | None, mollie_methods: str | None,
                       stripe_key: str | None, stripe_secrets: tuple[str, ...], partial: bool | None,
                       partial_minimum: str | None, currency: str | None) -> None:
    """Set an organization's providers, keys and partial payments; what is not given keeps its value (or the
    PORTAL_* default)."""
    from portal.domain.payment_settings import configure

    def split(value: str | None) -> list[str] | None:
        return [v.strip() for v in value.split(",") if v.strip()] if value is not None else None

    box = _secret_box()
    _run(lambda conn: configure(conn, orgs.get_organization(conn, org_slug).id, SystemClock().now(), box,
                                providers=split(providers), mollie_api_key=mollie_key,
                                mollie_methods=split(mollie_methods), stripe_api_key=stripe_key,
                                stripe_webhook_secrets=list(stripe_secrets) or None, partial_payments=partial,
                                partial_minimum=partial_minimum, currency=currency))
    click.echo(f"payment settings of {org_slug} updated")


@main.group("secrets")
def secrets_group() -> None:
    """Encryption of provider and connector secrets at rest (PORTAL_ENCRYPTION_KEYS)."""


@secrets_group.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new Fernet key. To rotate: put it first in PORTAL_ENCRYPTION_KEYS (keep the old ones after it),
    restart, run `portal secrets rotate`, then drop the old keys."""
    click.echo(generate_key())


@secrets_group.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret with the newest key (and encrypt any stored before encryption)."""
    from portal.domain import stored_secrets

    box = _secret_box()
    changed = _run(stored_secrets.reseal_all, box)
    click.echo(f"re-encrypted the secrets of {changed} row(s) with the newest key")


def _secret_box() -> SecretBox:
    """The configured keys, or exit 2 with the message that names PORTAL_ENCRYPTION_KEYS."""
    try:
        return SecretBox(_settings().encryption_keys)
    except EncryptionKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve this worker's metrics (Prometheus text format) on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def worker(metrics_port: int | None, metrics_host: str) -> None:
    """Deliver outbox events through the connectors, reconcile payments and run scheduled imports."""
    import asyncio

    from portal.worker import run_until_signalled

    settings = _settings()
    _check_before_start(settings)
    database = _database()
    try:
        if metrics_port is not None:
            from portal.metrics import serve_worker_metrics

            serve_worker_metrics(database, metrics_host, metrics_port)
        asyncio.run(run_until_signalled(database, settings))
    finally:
        database.dispose()


def _check_before_start(settings: Settings) -> None:
    """What `portal serve` and `portal worker` check before they take any work, so that a wrong setting is
    one clear line and exit status 2 at start, never a failure at the first payment or upload."""
    from portal.domain.stored_secrets import check_all

    database = Database.from_url(settings.database_url)
    try:
        database.run(check_all, SecretBox(settings.encryption_keys), write=False)
    except EncryptionKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        click.echo(f"error: PORTAL_DATABASE_URL: the database cannot be used ({type(exc).__name__}: "
                   f"{str(exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc).strip()}); is it "
                   "running, and migrated (`portal db upgrade`)?", err=True)
        sys.exit(2)
    finally:
        database.dispose()
    try:
        open_store(settings.document_store_url).check_writable()
    except (StorageError, OSError) as exc:
        variable = "PORTAL_STORAGE_URL" if settings.storage_url else "PORTAL_STORAGE_DIR"
        click.echo(f"error: {variable}: the document store refused a test write ({exc})", err=True)
        sys.exit(2)


@main.group()
def outbox() -> None:
    """Deliveries of events to upstream systems."""


@outbox.command("list")
@click.option("--org", "org_slug", help="Only this organization.")
@click.option("--status", type=click.Choice(["pending", "in_flight", "delivered", "dead"]))
@click.option("--limit", type=int, default=50, show_default=True)
def outbox_list(org_slug: str | None, status: str | None, limit: int) -> None:
    from portal.domain.deliveries import listing

    rows, _ = _run(lambda conn: listing(conn, orgs.get_organization(conn, org_slug).id if org_slug else None,
                                        status, 0, limit))
    for row in rows:
        error = f"\t{row.last_error}" if row.last_error else ""
        click.echo(f"{row.id}\t{row.status}\t{row.connector_name}\tevent {row.event_id}\t"
                   f"{row.attempts} attempt(s){error}")


@outbox.command("retry")
@click.argument("delivery_id", type=int)
def outbox_retry(delivery_id: int) -> None:
    """Give a dead delivery another round of attempts."""
    from portal.domain.deliveries import retry

    _run(lambda conn: retry(conn, None, delivery_id, SystemClock().now()))
    click.echo(f"delivery {delivery_id} queued again")


@main.group()
def connector() -> None:
    """Connectors to upstream systems."""


@connector.command("put")
@click.argument("org_slug")
@click.argument("name")
@click.option("--type", "kind", required=True, type=click.Choice(["webhook", "status_patch", "pull_import", "email"]))
@click.option("--settings", "settings_json", required=True, help="The settings as JSON (see docs/connectors.md).")
def connector_put(org_slug: str, name: str, kind: str, settings_json: str) -> None:
    import json

    from portal.connectors import registry
    from portal.domain.connectors import put
    from portal.errors import InvalidInput

    try:
        settings = json.loads(settings_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    allow_private = _settings().connectors_allow_private_networks
    try:
        registry.validate(kind, settings, allow_private_networks=allow_private)
    except InvalidInput as exc:
        click.echo("error: " + "; ".join(f"{e.path}: {e.message}" for e in exc.errors), err=True)
        sys.exit(1)
    types = registry.event_types(kind, settings)
    box = _secret_box()
    result = _run(lambda conn: put(conn, orgs.get_organization(conn, org_slug).id, name, kind, settings, types,
                                   SystemClock().now(), box))
    click.echo(f"connector {name} {result}; delivers: {', '.join(types) or 'nothing (it imports)'}")


@connector.command("list")
@click.argument("org_slug")
def connector_list(org_slug: str) -> None:
    from portal.domain.connectors import listing

    for row in _run(lambda conn: listing(conn, orgs.get_organization(conn, org_slug).id)):
        click.echo(f"{row.name}\t{row.type}\t{', '.join(row.event_types)}")


@connector.command("delete")
@click.argument("org_slug")
@click.argument("name")
def connector_delete(org_slug: str, name: str) -> None:
    from portal.domain.connectors import delete

    _run(lambda conn: delete(conn, orgs.get_organization(conn, org_slug).id, name))
    click.echo(f"connector {name} removed")


def _store_logo(path: str) -> tuple[str, str]:
    """Copy a logo into the document store; returns (sha256, media type). Only PNG and JPEG: an SVG can
    carry script."""
    data = open(path, "rb").read(8)
    media_type = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg" if data.startswith(b"\xff\xd8") else None
    if media_type is None:
        click.echo("error: the logo must be a PNG or JPEG file", err=True)
        sys.exit(1)
    store = open_store(_settings().document_store_url)
    file, temp = store.temporary_file()
    with file, open(path, "rb") as source:
        shutil.copyfileobj(source, file)
    return store.store_file(temp).sha256, media_type


T = TypeVar("T")


def _run(fn: Callable[..., T], *args: Any) -> T:
    database = _database()
    try:
        return database.run(fn, *args)
    except QuittanceError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(1)
    except EncryptionKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
