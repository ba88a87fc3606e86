"""Server-side sessions: an opaque random secret in the cookie, its sha256 in the `sessions` table.

A session lives until it expires (by the injected clock) or is ended on the server (signing out), whichever
comes first; a copied cookie is worth nothing after either. Only the hash is stored, so reading the table
opens no session. Debtor sessions are bound to the link that opened them, and every request also re-checks
that link (links.resolve), so revoking or expiring the link ends them at once. Staff sessions (kind "staff",
and "staff_2fa" between the password and the TOTP code) are bound to a staff person and to the organization in
use; they also end after a while without use (`last_seen_at`, see portal.web.staff.session), and all of a
person's end together when their password or role changes or they are disabled (`end_all_of_person`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from portal.db.access import sessions

DEBTOR = "debtor"
STAFF = "staff"
STAFF_2FA = "staff_2fa"
# Ended and expired sessions are kept this long (a trace for support questions), then pruned.
KEEP_AFTER_END = dt.timedelta(days=1)
PRUNE_BATCH = 200
# token_urlsafe(32) is 43 characters; anything much longer is not one of ours and is not even hashed.
MAX_SECRET_LENGTH = 64


@dataclass(frozen=True)
class Session:
    id: int
    kind: str
    organization_id: int | None
    link_id: int | None
    expires_at: dt.datetime
    staff_person_id: int | None = None
    last_seen_at: dt.datetime | None = None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def open_session(conn: sa.Connection, kind: str, now: dt.datetime, lifetime: dt.timedelta, *,
                 organization_id: int | None = None, link_id: int | None = None,
                 staff_person_id: int | None = None) -> str:
    """A new session; the secret returned goes into the cookie and is not stored anywhere."""
    secret = secrets.token_urlsafe(32)
    conn.execute(sessions.insert().values(
        kind=kind, secret_hash=hash_secret(secret), organization_id=organization_id, link_id=link_id,
        staff_person_id=staff_person_id, created_at=now, last_seen_at=now, expires_at=now + lifetime))
    prune(conn, now)
    return secret


_FIND = (sa.select(sessions.c.id, sessions.c.kind, sessions.c.organization_id, sessions.c.link_id,
                   sessions.c.expires_at, sessions.c.staff_person_id, sessions.c.last_seen_at)
         .where(sessions.c.secret_hash == sa.bindparam("secret_hash"), sessions.c.kind == sa.bindparam("kind"),
                sessions.c.revoked_at.is_(None), sessions.c.expires_at > sa.bindparam("now")))


def find(conn: sa.Connection, kind: str, secret: str, now: dt.datetime) -> Session | None:
    """The live session of this kind with this secret, or None (unknown, ended or expired)."""
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        return None
    row = conn.execute(_FIND, {"secret_hash": hash_secret(secret), "kind": kind, "now": now}).first()
    if row is None:
        return None
    return Session(row.id, row.kind, row.organization_id, row.link_id, row.expires_at, row.staff_person_id,
                   row.last_seen_at)


def touch(conn: sa.Connection, session_id: int, now: dt.datetime) -> None:
    """Note that the session was used for something that writes anyway (a form posted)."""
    conn.execute(sessions.update().where(sessions.c.id == session_id).values(last_seen_at=now))


def set_organization(conn: sa.Connection, session_id: int, organization_id: int, now: dt.datetime) -> None:
    """A staff session switches to another organization of the same person (checked by the caller)."""
    conn.execute(sessions.update().where(sessions.c.id == session_id).values(organization_id=organization_id,
                                                                           last_seen_at=now))


def end_all_of_person(conn: sa.Connection, person_id: int, now: dt.datetime) -> int:
    """End every live staff session of a person (a password or role change, disabling): on every device and
    process at once, since each request reads its row."""
    return int(conn.execute(sessions.update().where(
        sessions.c.staff_person_id == person_id, sessions.c.kind.in_((STAFF, STAFF_2FA)),
        sessions.c.revoked_at.is_(None)).values(revoked_at=now)).rowcount)


def end(conn: sa.Connection, kind: str, secret: str, now: dt.datetime) -> bool:
    """End the session on the server: its cookie opens nothing from now on, on every process."""
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        return False
    return bool(conn.execute(sessions.update().where(
        sessions.c.secret_hash == hash_secret(secret), sessions.c.kind == kind,
        sessions.c.revoked_at.is_(None)).values(revoked_at=now, last_seen_at=now)).rowcount)


def prune(conn: sa.Connection, now: dt.datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` sessions that expired more than KEEP_AFTER_END ago (an ended session still has its
    expiry, so it goes at the same time). Rows another transaction holds are skipped, not waited for."""
    doomed = (sa.select(sessions.c.id).where(sessions.c.expires_at <= now - KEEP_AFTER_END).limit(batch)
              .with_for_update(skip_locked=True))
    return int(conn.execute(sessions.delete().where(sessions.c.id.in_(doomed))).rowcount)
