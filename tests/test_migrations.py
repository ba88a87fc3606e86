"""The Alembic migrations produce exactly the schema the code declares, on both databases."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from portal.db import Database, create_engine, metadata
from portal.db.migrate import alembic_config, upgrade


def test_migrated_schema_matches_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


@pytest.fixture
def empty_url(database: Database, tmp_path: Any) -> Iterator[str]:
    """A database of its own, on the test's backend, with nothing in it."""
    if not database.is_postgresql:
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield database.engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")


def test_scoped_links_move_from_json_to_link_invoices_and_back(empty_url: str) -> None:
    """Each kind of value the JSON column could hold keeps its meaning: null (JSON or SQL) is the whole history,
    a list of the customer's invoice ids is that scope, anything else is a scope of nothing."""
    script = ScriptDirectory.from_config(alembic_config(empty_url))
    revision = next(r for r in script.walk_revisions() if r.path.endswith("_link_invoices.py"))
    upgrade(empty_url, revision.down_revision)  # type: ignore[arg-type]
    now = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            org = conn.exec_driver_sql(
                "INSERT INTO organizations (slug, name, created_at) VALUES ('acme', 'Acme', '2026-11-02') "
                "RETURNING id").scalar_one()
            customer, other = (conn.execute(sa.text(
                "INSERT INTO customers (organization_id, external_id, name, locale, created_at, updated_at) "
                "VALUES (:org, :external_id, 'C', 'fr-BE', :now, :now) RETURNING id"),
                {"org": org, "external_id": external_id, "now": now}).scalar_one() for external_id in ("C1", "C2"))
            mine, theirs = (conn.execute(sa.text(
                "INSERT INTO invoices (organization_id, external_id, customer_id, kind, status, currency, "
                "total_minor, amount_due_minor, paid_minor, lines, revision, content_hash, created_at, updated_at) "
                "VALUES (:org, :external_id, :customer, 'invoice', 'open', 'EUR', 100, 100, 0, '[]', 1, 'x', :now, "
                ":now) RETURNING id"), {"org": org, "external_id": external_id, "customer": owner, "now": now}
            ).scalar_one() for external_id, owner in (("I1", customer), ("I2", other)))
            links = sa.table("portal_links", sa.column("id"), sa.column("organization_id"), sa.column("customer_id"),
                             sa.column("created_at"), sa.column("expires_at"), sa.column("invoice_ids", sa.JSON()))
            made = {}
            for name, value in (("whole", None), ("whole_sql_null", sa.null()), ("listed", [mine, theirs]),
                                ("odd", {"ids": [mine]}), ("empty", [])):
                made[name] = conn.execute(links.insert().values(
                    organization_id=org, customer_id=customer, created_at=now, expires_at=now,
                    invoice_ids=value).returning(links.c.id)).scalar_one()

        upgrade(empty_url)
        with engine.connect() as conn:
            scoped = dict(conn.exec_driver_sql("SELECT id, scoped FROM portal_links").all())
            listed = conn.exec_driver_sql("SELECT link_id, invoice_id, organization_id FROM link_invoices").all()
        assert {name: bool(scoped[link_id]) for name, link_id in made.items()} == {
            "whole": False, "whole_sql_null": False, "listed": True, "odd": True, "empty": True}
        assert listed == [(made["listed"], mine, org)], "only the link's own customer's invoices move over"

        command.downgrade(alembic_config(empty_url), revision.down_revision)  # type: ignore[arg-type]
        with engine.connect() as conn:
            restored = {row.id: row.invoice_ids for row in conn.execute(sa.select(links))}
        assert {name: restored[link_id] for name, link_id in made.items()} == {
            "whole": None, "whole_sql_null": None, "listed": [mine], "odd": [], "empty": []}
    finally:
        engine.dispose()
