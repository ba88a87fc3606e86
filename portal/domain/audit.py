"""The audit log: who did what, when and from where, written in the transaction of the change it records.

Append-only: this module only inserts (and the database refuses an UPDATE of a row). Actions are short
stable names (`sign_in`, `sign_in_failed`, `role_changed`...), the details a small JSON object.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from portal.db.staff import audit_log, staff_people

SIGN_IN = "sign_in"
SIGN_IN_FAILED = "sign_in_failed"
SIGN_IN_THROTTLED = "sign_in_throttled"
SIGN_OUT = "sign_out"
PASSWORD_CHANGED = "password_changed"
PASSWORD_RESET_REQUESTED = "password_reset_requested"
ROLE_CHANGED = "role_changed"
STAFF_DISABLED = "staff_disabled"
STAFF_INVITED = "staff_invited"
TOTP_ENABLED = "totp_enabled"
TOTP_REQUIRED_CHANGED = "totp_required_changed"
ORGANIZATION_SWITCHED = "organization_switched"
FORBIDDEN = "forbidden"
CSRF_REFUSED = "csrf_refused"


def record(conn: sa.Connection, action: str, now: dt.datetime, *, organization_id: int | None = None,
           person_id: int | None = None, actor_email: str | None = None, client: str | None = None,
           detail: dict[str, Any] | None = None) -> None:
    conn.execute(audit_log.insert().values(
        organization_id=organization_id, person_id=person_id, actor_email=(actor_email or None) and actor_email[:320],
        action=action, detail=detail, client_address=(client or None) and client[:64], occurred_at=now))


def entries(conn: sa.Connection, organization_id: int, limit: int = 100) -> Sequence[sa.Row]:
    """The organization's newest entries first, each with who did it (the person's email, or the email typed)."""
    who = sa.func.coalesce(staff_people.c.email, audit_log.c.actor_email).label("who")
    return conn.execute(sa.select(audit_log, who).outerjoin(staff_people, staff_people.c.id == audit_log.c.person_id)
                        .where(audit_log.c.organization_id == organization_id)
                        .order_by(audit_log.c.id.desc()).limit(limit)).all()
