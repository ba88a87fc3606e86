"""The `portal` command: serve, db upgrade, the organization / API key admin, and the demo data."""

from __future__ import annotations

import os
import sys

import click

from portal.clock import SystemClock
from portal.db import Database
from portal.db.migrate import upgrade
from portal.demo import load_demo, rotate_demo_key, sample_pdf
from portal.domain import organizations as orgs
from portal.errors import QuittanceError
from portal.settings import Settings
from portal.storage import DocumentStore


def _settings() -> Settings:
    return Settings.from_env()


def _database() -> Database:
    return Database.from_url(_settings().database_url)


@click.group()
def main() -> None:
    """Quittance: customer invoice and payment portal."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Defaults to $PORT, then 8000.")
@click.option("--workers", type=int, default=1, show_default=True, help="Server processes (PostgreSQL only).")
def serve(host: str, port: int | None, workers: int) -> None:
    """Run the web server."""
    import uvicorn

    port = port or int(os.environ.get("PORT") or 8000)
    uvicorn.run("portal.web.asgi:app", host=host, port=port, workers=workers, proxy_headers=True,
                log_level="info", access_log=False)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the latest schema (safe to run on every release)."""
    settings = _settings()
    upgrade(settings.database_url)
    click.echo("database is at the latest schema")


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
    def create(conn):  # type: ignore[no-untyped-def]
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
def demo() -> None:
    """The demo organization that scripts/demo serves."""


@demo.command("load")
def demo_load() -> None:
    """Create the demo organization with its customers, invoices and PDFs, or bring it back to them.

    Safe to run again: the same day, nothing changes."""
    summary = _run(load_demo, DocumentStore(_settings().storage_dir), SystemClock().now())
    click.echo(summary.describe())


@demo.command("key")
def demo_key() -> None:
    """Print a new API key for the demo organization, revoking the one this command printed last time."""
    click.echo(_run(rotate_demo_key, SystemClock().now()))


@demo.command("pdf")
@click.argument("number")
def demo_pdf(number: str) -> None:
    """Write a small sample invoice PDF to standard output, to try the document upload with."""
    click.get_binary_stream("stdout").write(sample_pdf(number))


def _run(fn, *args):  # type: ignore[no-untyped-def]
    database = _database()
    try:
        return database.run(fn, *args)
    except QuittanceError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(1)
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
