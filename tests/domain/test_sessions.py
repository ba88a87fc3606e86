"""The sessions table as a reusable store: kinds kept apart, ended by their secret, expired by the clock,
pruned a day after expiry."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from portal.clock import FrozenClock
from portal.db import Database
from portal.db.access import sessions as table
from portal.domain import organizations as orgs
from portal.domain import sessions
from portal.domain import staff as staff_domain

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def person(database: Database, clock: FrozenClock) -> int:
    """A staff person: staff sessions are bound to one."""
    def create(conn: sa.Connection) -> int:
        org = orgs.create_organization(conn, "acme", "Acme", clock.now())
        return staff_domain.add_staff(conn, org.id, "ann@acme.example", "viewer", clock.now()).id

    return database.run(create)


def test_kinds_are_kept_apart_and_ending_is_for_good(database: Database, clock: FrozenClock, person: int) -> None:
    staff = database.run(sessions.open_session, "staff", clock.now(), HOUR, staff_person_id=person)
    assert database.run(sessions.find, "staff", staff, clock.now()) is not None
    assert database.run(sessions.find, sessions.DEBTOR, staff, clock.now()) is None, "a staff secret is no debtor's"
    assert database.run(sessions.end, sessions.DEBTOR, staff, clock.now()) is False
    assert database.run(sessions.end, "staff", staff, clock.now()) is True
    assert database.run(sessions.find, "staff", staff, clock.now()) is None
    assert database.run(sessions.end, "staff", staff, clock.now()) is False, "ending twice changes nothing"
    for junk in ("", "x" * 1000):
        assert database.run(sessions.find, "staff", junk, clock.now()) is None


def test_a_debtor_session_needs_its_link(database: Database, clock: FrozenClock) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        database.run(sessions.open_session, sessions.DEBTOR, clock.now(), HOUR)


def test_a_staff_session_needs_its_person(database: Database, clock: FrozenClock) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        database.run(sessions.open_session, sessions.STAFF, clock.now(), HOUR)


def test_expiry_and_pruning(database: Database, clock: FrozenClock, person: int) -> None:
    first = database.run(sessions.open_session, "staff", clock.now(), HOUR, staff_person_id=person)
    clock.advance(hours=1)
    assert database.run(sessions.find, "staff", first, clock.now()) is None, "expired at its expiry"
    clock.advance(days=1, seconds=-1)
    database.run(sessions.open_session, "staff", clock.now(), HOUR, staff_person_id=person)
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 2, "kept for a day after expiry"
    clock.advance(seconds=1)
    database.run(sessions.open_session, "staff", clock.now(), HOUR, staff_person_id=person)
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 2, "then pruned"
