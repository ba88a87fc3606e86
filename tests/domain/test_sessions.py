"""The sessions table as a reusable store: kinds kept apart, ended by their secret, expired by the clock,
pruned a day after expiry."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from portal.clock import FrozenClock
from portal.db import Database
from portal.db.access import sessions as table
from portal.domain import sessions

HOUR = dt.timedelta(hours=1)


def test_kinds_are_kept_apart_and_ending_is_for_good(database: Database, clock: FrozenClock) -> None:
    staff = database.run(sessions.open_session, "staff", clock.now(), HOUR)
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


def test_expiry_and_pruning(database: Database, clock: FrozenClock) -> None:
    first = database.run(sessions.open_session, "staff", clock.now(), HOUR)
    clock.advance(hours=1)
    assert database.run(sessions.find, "staff", first, clock.now()) is None, "expired at its expiry"
    clock.advance(days=1, seconds=-1)
    database.run(sessions.open_session, "staff", clock.now(), HOUR)
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 2, "kept for a day after expiry"
    clock.advance(seconds=1)
    database.run(sessions.open_session, "staff", clock.now(), HOUR)
    with database.transaction() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 2, "then pruned"
