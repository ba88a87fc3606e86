"""Rate limits kept in the database, so that every server process and host counts against the same windows.

A limit allows `hits` per `period`, per (scope, bucket, key): scope is an organization id, or "*" for what
holds before an organization is known (a client address trying link tokens or API keys); the bucket names
what is counted; the key is whom it is counted for (a link id, a client address, an account). Counting is
a sliding-window counter: one row per fixed window, incremented by an atomic upsert (`INSERT ... ON CONFLICT
DO UPDATE`, on SQLite and PostgreSQL alike), and the previous window's count weighed by how much of it the
sliding window still covers. That smooths the burst a fixed window allows at its edge (a whole limit at the
end of one window and another at the start of the next) at the cost of one more indexed read.

Two ways to use a limit:
- `hit`: count this attempt, then say whether it is within the limit (checkout starts: refused attempts
  count too, so hammering the button keeps it refused; stopping lets it expire).
- `check` before the work and `hit` only when it failed (link tokens, API keys, a staff sign-in): only
  failures count, and once there are too many even a good token or password is refused until the window
  moves on, so guessing gains nothing from the right answer arriving during a lockout.

Every answer says when to try again. Windows expire by the injected clock: nothing is ever locked for good.
Rows are pruned a batch at a time whenever a new window starts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from portal.db.access import rate_limits

EVERYWHERE = "*"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
PRUNE_BATCH = 500


@dataclass(frozen=True)
class Limit:
    bucket: str
    hits: int
    period: dt.timedelta

    def __post_init__(self) -> None:
        if self.hits < 1 or self.period < dt.timedelta(seconds=1) or len(self.bucket) > 40:
            raise ValueError(f"not a usable limit: {self}")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    # Whole seconds until one more attempt would be allowed, if nothing else is counted meanwhile (0 when
    # it would be now): what Retry-After says.
    retry_after: int


# The limits Quittance applies (docs/operations.md lists them).
# A debtor starting checkouts: each start may create a payment at the provider.
CHECKOUT_STARTS = Limit("checkout-start", 5, dt.timedelta(minutes=1))
# A client address presenting link tokens that do not open a portal (bad signature, expired, revoked).
LINK_TOKEN_FAILURES = Limit("link-token-failure", 20, dt.timedelta(minutes=10))
# A client address presenting API keys that authenticate nothing.
API_KEY_FAILURES = Limit("api-key-failure", 20, dt.timedelta(minutes=10))
# Failed staff sign-ins (a wrong password or TOTP code, an unknown email), per account (the email as typed,
# lower-cased) and per client address; the account limit is lower, the address one allows an office behind
# one address its typos.
STAFF_SIGN_IN_ACCOUNT = Limit("staff-sign-in-account", 5, dt.timedelta(minutes=15))
STAFF_SIGN_IN_CLIENT = Limit("staff-sign-in-client", 20, dt.timedelta(minutes=15))
# Password-reset mails asked for, per email and per client address: each one sends a mail.
STAFF_RESET_ACCOUNT = Limit("staff-reset-account", 3, dt.timedelta(hours=1))
STAFF_RESET_CLIENT = Limit("staff-reset-client", 10, dt.timedelta(hours=1))


def hit(conn: sa.Connection, limit: Limit, key: str, now: dt.datetime, *, scope: str = EVERYWHERE) -> Verdict:
    """Count one attempt, and judge it with itself included."""
    window = _Window.at(limit, now)
    values = {"scope": scope, "bucket": limit.bucket, "key": _stored(key)}
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(rate_limits)
    current = conn.execute(
        insert.values(**values, window_start=window.start, hits=1, expires_at=window.start + 2 * limit.period)
        .on_conflict_do_update(index_elements=["scope", "bucket", "key", "window_start"],
                               set_={"hits": rate_limits.c.hits + 1})
        .returning(rate_limits.c.hits)).scalar_one()
    previous = conn.execute(sa.select(rate_limits.c.hits).where(
        *_of(values), rate_limits.c.window_start == window.start - limit.period)).scalar() or 0
    if current == 1:
        prune(conn, now)
    return window.verdict(previous, current, counted=True)


def check(conn: sa.Connection, limit: Limit, key: str, now: dt.datetime, *, scope: str = EVERYWHERE) -> Verdict:
    """Whether one more attempt would be allowed now, counting nothing."""
    window = _Window.at(limit, now)
    values = {"scope": scope, "bucket": limit.bucket, "key": _stored(key)}
    by_start = {_micros(start): hits for start, hits in conn.execute(
        sa.select(rate_limits.c.window_start, rate_limits.c.hits).where(
            *_of(values), rate_limits.c.window_start >= window.start - limit.period))}
    return window.verdict(by_start.get(window.start_us - window.period_us, 0), by_start.get(window.start_us, 0),
                          counted=False)


def prune(conn: sa.Connection, now: dt.datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` windows that no longer count. Rows another transaction holds are skipped, not
    waited for (PostgreSQL; SQLite has one writer at a time anyway)."""
    doomed = (sa.select(rate_limits.c.id).where(rate_limits.c.expires_at <= now).limit(batch)
              .with_for_update(skip_locked=True))
    return int(conn.execute(rate_limits.delete().where(rate_limits.c.id.in_(doomed))).rowcount)


def _of(values: dict[str, str]) -> list[sa.ColumnElement[bool]]:
    return [rate_limits.c[name] == value for name, value in values.items()]


def _stored(key: str) -> str:
    """Keys are stored as given (an address, a link id), so that staff can read them; a key too long for the
    column (an odd account name) by its digest, which still tells keys apart."""
    return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch. SQLite hands back naive datetimes; every one stored is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class _Window:
    """The fixed window `now` falls in. Time is counted in integer microseconds and weights are exact
    fractions, so that a verdict at the instant Retry-After names is the one it promised."""

    limit: Limit
    start_us: int
    elapsed_us: int

    @classmethod
    def at(cls, limit: Limit, now: dt.datetime) -> _Window:
        period_us = limit.period // _MICROSECOND
        now_us = _micros(now)
        return cls(limit, now_us - now_us % period_us, now_us % period_us)

    @property
    def period_us(self) -> int:
        return self.limit.period // _MICROSECOND

    @property
    def start(self) -> dt.datetime:
        return _EPOCH + dt.timedelta(microseconds=self.start_us)

    def verdict(self, previous: int, current: int, *, counted: bool) -> Verdict:
        """`counted`: `current` includes the attempt being judged (`hit`); otherwise it is the one to come."""
        allowed_total = self.limit.hits if counted else self.limit.hits - 1
        allowed = self._estimate(previous, current, self.elapsed_us) <= allowed_total
        return Verdict(allowed, 0 if allowed else self._wait_seconds(previous, current))

    def _estimate(self, previous: int, current: int, elapsed_us: int) -> Fraction:
        return Fraction(previous * (self.period_us - elapsed_us), self.period_us) + current

    def _wait_seconds(self, previous: int, current: int) -> int:
        """Whole seconds until one more attempt fits, if nothing else is counted: first while the previous
        window's weight falls, then in the next window, where this window's count is the previous one."""
        room = self.limit.hits - 1  # what may already be counted, for one more attempt to fit
        period, elapsed = self.period_us, self.elapsed_us
        if self._estimate(previous, current, elapsed) <= room:
            return 0
        if current <= room:
            # Only the previous window's weight is in the way: previous * (period - elapsed - t) / period
            # falls to room - current within this window (at its end the weight is 0).
            wait = Fraction(period - elapsed) - Fraction((room - current) * period, previous)
            return math.ceil(wait / 1_000_000)
        # current > room: in the next window, at x into it, current * (period - x) / period <= room.
        into_next = period - Fraction(room * period, current)
        return math.ceil((period - elapsed + into_next) / 1_000_000)
