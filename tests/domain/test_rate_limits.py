"""Rate limits in the database: counted atomically, apart per scope, bucket and key, expiring by the clock,
and saying truthfully when to try again."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.clock import FrozenClock
from portal.db import Database
from portal.db.access import rate_limits as table
from portal.domain import rate_limits
from portal.domain.rate_limits import Limit
from tests.conftest import START

FIVE_A_MINUTE = Limit("test", 5, dt.timedelta(minutes=1))


def hit(database: Database, clock: FrozenClock, key: str = "k", limit: Limit = FIVE_A_MINUTE,
        scope: str = "*") -> rate_limits.Verdict:
    return database.run(rate_limits.hit, limit, key, clock.now(), scope=scope)


def check(database: Database, clock: FrozenClock, key: str = "k", limit: Limit = FIVE_A_MINUTE) -> rate_limits.Verdict:
    return database.run(rate_limits.check, limit, key, clock.now(), write=False)


def rows(database: Database) -> int:
    with database.transaction() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table)))


def test_the_limit_then_a_refusal_that_names_the_wait(database: Database, clock: FrozenClock) -> None:
    assert [hit(database, clock).allowed for _ in range(6)] == [True] * 5 + [False]
    refused = hit(database, clock)
    assert not refused.allowed and 0 < refused.retry_after <= 120
    assert not check(database, clock).allowed
    clock.advance(seconds=refused.retry_after - 1)
    assert not check(database, clock).allowed
    clock.advance(seconds=1)
    assert check(database, clock) == rate_limits.Verdict(True, 0)
    assert hit(database, clock).allowed


def test_scopes_buckets_and_keys_count_apart(database: Database, clock: FrozenClock) -> None:
    for _ in range(5):
        hit(database, clock, "a")
    assert not check(database, clock, "a").allowed
    assert check(database, clock, "b").allowed
    assert hit(database, clock, "a", scope="7").allowed
    assert hit(database, clock, "a", limit=Limit("other", 5, dt.timedelta(minutes=1))).allowed
    long_key = "x" * 300
    assert [hit(database, clock, long_key + "1").allowed for _ in range(6)][-1] is False
    assert hit(database, clock, long_key + "2").allowed, "long keys are told apart by their digest"


def test_check_counts_nothing(database: Database, clock: FrozenClock) -> None:
    for _ in range(20):
        assert check(database, clock).allowed
    assert rows(database) == 0
    assert all(hit(database, clock).allowed for _ in range(5))


def test_the_sliding_window_smooths_the_edge_of_a_fixed_one(database: Database, clock: FrozenClock) -> None:
    """Five hits at the very end of one minute do not buy five more at the start of the next."""
    assert clock.now().second == 0
    clock.advance(seconds=59)
    assert all(hit(database, clock).allowed for _ in range(5))
    clock.advance(seconds=2)  # one second into the next window: the last one still weighs 59/60
    assert not hit(database, clock).allowed
    clock.advance(seconds=60)
    assert hit(database, clock).allowed


def test_windows_expire_and_old_rows_are_pruned(database: Database, clock: FrozenClock) -> None:
    for key in ("a", "b", "c"):
        for _ in range(6):
            hit(database, clock, key)
    assert rows(database) == 3
    clock.advance(minutes=2, seconds=1)
    assert hit(database, clock, "d").allowed
    assert rows(database) == 1, "a new window prunes the windows that no longer count"
    assert check(database, clock, "a").allowed


def test_concurrent_hits_are_each_counted_once(database: Database, clock: FrozenClock) -> None:
    """Many processes at once (threads on their own connections here): the upsert counts every hit, and
    exactly the limit's worth is allowed."""
    limit = Limit("burst", 10, dt.timedelta(minutes=1))
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda _: hit(database, clock, "burst", limit), range(40)))
    assert sum(v.allowed for v in verdicts) == 10
    with database.transaction() as conn:
        assert conn.scalar(sa.select(table.c.hits)) == 40


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 6), period=st.integers(1, 600),
       steps=st.lists(st.floats(0, 400, allow_nan=False), min_size=1, max_size=25))
def test_retry_after_is_exact_to_the_second(database: Database, limit: int, period: int,
                                            steps: list[float]) -> None:
    """Whatever came before: after a refusal, one more is refused a second before Retry-After, allowed at it."""
    with database.transaction() as conn:
        conn.execute(table.delete())
    clock = FrozenClock(START)
    rule = Limit("prop", limit, dt.timedelta(seconds=period))
    for step in steps:
        clock.advance(seconds=step)
        verdict = hit(database, clock, limit=rule)
        if verdict.allowed:
            continue
        assert verdict.retry_after >= 1
        later = FrozenClock(clock.now() + dt.timedelta(seconds=verdict.retry_after))
        assert check(database, later, limit=rule).allowed
        sooner = FrozenClock(later.now() - dt.timedelta(seconds=1))
        assert not check(database, sooner, limit=rule).allowed
