"""On SQLite, the transactions that record money commit with `synchronous=FULL`: a webhook answered 200 (and a
checkout the debtor was sent to pay) survives an OS crash or a power loss, not only a crash of the process.
Other writes keep `synchronous=NORMAL` (bench/README.md has what the fsync costs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import Tenant
from tests.support.providers import mollie, stripe_emulator  # noqa: F401
from tests.web.test_checkout import app, checkout, debtor  # noqa: F401
from tests.web.test_portal import Debtor

FULL, NORMAL = 2, 1
WATCHED = ("customers", "checkouts", "provider_events", "payments")


@pytest.fixture
def synchronous_at_insert(database: Any) -> Iterator[dict[str, set[int]]]:
    """The `PRAGMA synchronous` level in force, read inside the transaction, when a row goes into each table."""
    seen: dict[str, set[int]] = {}

    def before(conn: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split(None, 3)
        if words[:2] == ["INSERT", "INTO"] and words[2] in WATCHED:
            level = conn.connection.driver_connection.execute("PRAGMA synchronous").fetchone()[0]
            seen.setdefault(words[2], set()).add(level)

    sa.event.listen(database.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", before)


@pytest.mark.sqlite_only
def test_money_is_committed_to_the_disk(tenant: Tenant, debtor: Debtor, database: Any, stripe_emulator: Any,  # noqa: F811
                                        synchronous_at_insert: dict[str, set[int]]) -> None:
    tenant.put_customer("C2", name="Other")
    answer = checkout(debtor, database, "stripe:card", "A")
    session_id = answer.headers["location"].rsplit("/", 1)[1]
    emitted = len(stripe_emulator.events)
    stripe_emulator.complete(session_id, "success")
    completed = [e for e in stripe_emulator.events[emitted:] if e["type"] == "checkout.session.completed"][0]
    body, headers = stripe_emulator.build_webhook(completed)
    with TestClient(debtor.client.app) as hooks:
        assert hooks.post("/webhooks/stripe/acme", content=body, headers=headers).status_code == 200
    assert synchronous_at_insert == {"customers": {NORMAL}, "checkouts": {FULL}, "provider_events": {FULL},
                                     "payments": {FULL}}


@pytest.mark.sqlite_only
def test_a_mollie_webhook_is_committed_to_the_disk(debtor: Debtor, database: Any, mollie: Any,  # noqa: F811
                                                   synchronous_at_insert: dict[str, set[int]]) -> None:
    payment_id = checkout(debtor, database, "mollie:ideal", "A").headers["location"].rsplit("/", 1)[1]
    mollie.set_status(payment_id, "paid", send_webhook=False)
    with TestClient(debtor.client.app) as hooks:
        assert hooks.post("/webhooks/mollie/acme", data={"id": payment_id}).status_code == 200
    assert synchronous_at_insert["payments"] == {FULL}
