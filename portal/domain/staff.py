"""Staff accounts of the back office: people, their role in each organization, passwords, one-time links and
TOTP.

- A person is one email address, staff of one or several organizations with a role in each
  (viewer < finance < admin). Disabling is per organization; a person disabled everywhere cannot sign in.
- Passwords are hashed with argon2id (argon2-cffi's PasswordHasher and its current parameters); a hash made
  with older parameters is replaced at the next sign-in (`check_needs_rehash`). An unknown email is verified
  against a dummy hash, so that it takes as long as a wrong password and gets the same answer.
- One-time links ("set your password" after an invitation, 24 hours; "reset your password", 1 hour) carry a
  random token of which only the sha256 is stored; using one marks it used.
- Any password or role change, and disabling, ends the person's sessions (sessions.end_all_of_person).
- TOTP (RFC 6238, pyotp): a person enrols by confirming a code; an accepted code's time step is kept, so the
  same code is never accepted twice.

Every change that a person makes writes its audit entry in the same transaction (the callers pass who and
from where).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from portal.db.organizations import organizations
from portal.db.staff import staff_memberships, staff_people, staff_tokens
from portal.domain import audit, sessions
from portal.errors import Conflict, FieldError, InvalidInput, NotFound

Role = Literal["viewer", "finance", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "finance", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}

SET_PASSWORD = "set_password"
RESET_PASSWORD = "reset_password"
TOKEN_LIFETIMES = {SET_PASSWORD: dt.timedelta(hours=24), RESET_PASSWORD: dt.timedelta(hours=1)}
# token_urlsafe(32) is 43 characters.
MAX_TOKEN_LENGTH = 64

PASSWORD_MIN = 12
# argon2 takes any length, but hashing a megabyte for every guess is a cheap way to load the server.
PASSWORD_MAX = 256
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
TOTP_ISSUER = "Quittance"

_hasher = PasswordHasher()


class InvalidStaffToken(NotFound):
    """A set-password or reset link that is unknown, used already or expired: one answer for all three."""

    def __init__(self) -> None:
        super().__init__("this link does not work (any more)")


@dataclass(frozen=True)
class Person:
    id: int
    email: str
    name: str | None
    locale: str
    has_password: bool
    totp_enabled: bool


@dataclass(frozen=True)
class Membership:
    organization_id: int
    organization_slug: str
    organization_name: str
    role: Role
    disabled: bool
    require_totp: bool


@dataclass(frozen=True)
class SignInCandidate:
    """What the sign-in form needs to judge a password (read before the slow hash, outside any write)."""

    person_id: int
    email: str
    password_hash: str | None
    totp_secret: str | None
    totp_enabled: bool


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_email(email: str) -> str:
    email = normalize_email(email)
    if len(email) > 320 or not EMAIL.fullmatch(email):
        raise InvalidInput("not an email address", [FieldError("/email", "not an email address")])
    return email


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidInput("unknown role", [FieldError("/role", "one of viewer, finance, admin")])
    return role


def password_problem(password: str) -> str | None:
    """Why this password is refused, as a short code the pages translate, or None."""
    if len(password) < PASSWORD_MIN:
        return "too_short"
    if len(password) > PASSWORD_MAX:
        return "too_long"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    """A hash of nothing anyone knows, with the current parameters: verified for unknown emails."""
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """(accepted, needs_rehash). Takes as long for an account without a password (or no account at all:
    `stored` None) as for a wrong password."""
    if len(password) > PASSWORD_MAX:
        password = password[:PASSWORD_MAX + 1]  # still hashed, still wrong: the same time, the same answer
    try:
        _hasher.verify(stored or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    if stored is None:
        return False, False
    return True, _hasher.check_needs_rehash(stored)


def _person(row: Any) -> Person:
    return Person(row.id, row.email, row.name, row.locale, row.password_hash is not None,
                  row.totp_enabled_at is not None)


def person_by_email(conn: sa.Connection, email: str) -> Person | None:
    row = conn.execute(sa.select(staff_people).where(staff_people.c.email == normalize_email(email))).first()
    return _person(row) if row else None


def person(conn: sa.Connection, person_id: int) -> Person:
    row = conn.execute(sa.select(staff_people).where(staff_people.c.id == person_id)).first()
    if row is None:
        raise NotFound("no such staff person")
    return _person(row)


def _memberships_query() -> sa.Select[Any]:
    return (sa.select(staff_memberships.c.organization_id, organizations.c.slug, organizations.c.name,
                      staff_memberships.c.role, staff_memberships.c.disabled_at, organizations.c.staff_require_totp,
                      staff_memberships.c.person_id)
            .join(organizations, organizations.c.id == staff_memberships.c.organization_id))


def _membership(row: Any) -> Membership:
    return Membership(row.organization_id, row.slug, row.name, row.role, row.disabled_at is not None,
                      bool(row.staff_require_totp))


def memberships(conn: sa.Connection, person_id: int, *, active_only: bool = True) -> list[Membership]:
    query = _memberships_query().where(staff_memberships.c.person_id == person_id)
    if active_only:
        query = query.where(staff_memberships.c.disabled_at.is_(None))
    return [_membership(row) for row in conn.execute(query.order_by(organizations.c.name, organizations.c.id))]


def membership(conn: sa.Connection, person_id: int, organization_id: int) -> Membership | None:
    """The person's active membership of this organization, or None."""
    row = conn.execute(_memberships_query().where(
        staff_memberships.c.person_id == person_id, staff_memberships.c.organization_id == organization_id,
        staff_memberships.c.disabled_at.is_(None))).first()
    return _membership(row) if row else None


@dataclass(frozen=True)
class StaffListing:
    person: Person
    role: Role
    disabled: bool


def staff_of(conn: sa.Connection, organization_id: int) -> list[StaffListing]:
    rows = conn.execute(sa.select(staff_people, staff_memberships.c.role, staff_memberships.c.disabled_at.label(
        "membership_disabled_at")).join(staff_memberships, staff_memberships.c.person_id == staff_people.c.id)
        .where(staff_memberships.c.organization_id == organization_id).order_by(staff_people.c.email))
    return [StaffListing(_person(row), row.role, row.membership_disabled_at is not None) for row in rows]


def add_staff(conn: sa.Connection, organization_id: int, email: str, role: str, now: dt.datetime, *,
              name: str | None = None, locale: str = "en", actor_id: int | None = None,
              client: str | None = None) -> Person:
    """Make `email` staff of the organization with `role`: a new person, or one who is staff elsewhere. A
    disabled membership comes back with the new role. Conflict if they are active staff here already."""
    email, role = check_email(email), check_role(role)
    found = person_by_email(conn, email)
    if found is None:
        person_id = conn.execute(staff_people.insert().values(
            email=email, name=name, locale=locale, created_at=now).returning(staff_people.c.id)).scalar_one()
        found = person(conn, person_id)
    existing = conn.execute(sa.select(staff_memberships.c.id, staff_memberships.c.disabled_at).where(
        staff_memberships.c.organization_id == organization_id,
        staff_memberships.c.person_id == found.id)).first()
    if existing is not None and existing.disabled_at is None:
        raise Conflict(f"{email} is staff of this organization already", code="exists")
    if existing is None:
        conn.execute(staff_memberships.insert().values(organization_id=organization_id, person_id=found.id,
                                                       role=role, created_at=now))
    else:
        conn.execute(staff_memberships.update().where(staff_memberships.c.id == existing.id)
                     .values(role=role, disabled_at=None))
    audit.record(conn, audit.STAFF_INVITED, now, organization_id=organization_id, person_id=actor_id,
                 client=client, detail={"email": email, "role": role})
    return found


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(conn: sa.Connection, person_id: int, purpose: str, now: dt.datetime) -> str:
    """A new one-time token for a set-password or reset link; earlier unused ones of the same purpose stop
    working (only the newest link mailed is the one to use)."""
    conn.execute(staff_tokens.update().where(
        staff_tokens.c.person_id == person_id, staff_tokens.c.purpose == purpose,
        staff_tokens.c.used_at.is_(None)).values(used_at=now))
    token = secrets.token_urlsafe(32)
    conn.execute(staff_tokens.insert().values(person_id=person_id, purpose=purpose, token_hash=_hash_token(token),
                                              created_at=now, expires_at=now + TOKEN_LIFETIMES[purpose]))
    return token


def token_person(conn: sa.Connection, token: str, now: dt.datetime) -> Person:
    """The person a live token is for (without using it up: showing the form changes nothing)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidStaffToken()
    row = conn.execute(sa.select(staff_tokens.c.person_id).where(
        staff_tokens.c.token_hash == _hash_token(token), staff_tokens.c.used_at.is_(None),
        staff_tokens.c.expires_at > now)).first()
    if row is None:
        raise InvalidStaffToken()
    return person(conn, row.person_id)


def set_password_with_token(conn: sa.Connection, token: str, password: str, now: dt.datetime, *,
                            client: str | None = None) -> Person:
    """Use a one-time link: set the password, use up the token, end the person's sessions."""
    found = token_person(conn, token, now)
    used = conn.execute(staff_tokens.update().where(
        staff_tokens.c.token_hash == _hash_token(token), staff_tokens.c.used_at.is_(None)).values(used_at=now))
    if not used.rowcount:  # another request used it between the two statements
        raise InvalidStaffToken()
    set_password(conn, found.id, password, now, client=client)
    return found


def set_password(conn: sa.Connection, person_id: int, password: str, now: dt.datetime, *,
                 client: str | None = None, organization_id: int | None = None,
                 password_hash: str | None = None) -> None:
    """`password_hash`: the password hashed already (outside the transaction, so the slow hash holds no lock)."""
    problem = password_problem(password)
    if problem is not None:
        raise InvalidInput("password refused", [FieldError("/password", problem)])
    conn.execute(staff_people.update().where(staff_people.c.id == person_id).values(
        password_hash=password_hash or hash_password(password), password_changed_at=now))
    sessions.end_all_of_person(conn, person_id, now)
    audit.record(conn, audit.PASSWORD_CHANGED, now, organization_id=organization_id, person_id=person_id,
                 client=client)


def store_rehash(conn: sa.Connection, person_id: int, old_hash: str, new_hash: str) -> None:
    """Replace a hash made with older parameters, unless the password changed meanwhile."""
    conn.execute(staff_people.update().where(staff_people.c.id == person_id,
                                             staff_people.c.password_hash == old_hash)
                 .values(password_hash=new_hash))


def sign_in_candidate(conn: sa.Connection, email: str) -> SignInCandidate | None:
    row = conn.execute(sa.select(staff_people).where(staff_people.c.email == normalize_email(email))).first()
    if row is None:
        return None
    return SignInCandidate(row.id, row.email, row.password_hash, row.totp_secret, row.totp_enabled_at is not None)


def change_role(conn: sa.Connection, organization_id: int, email: str, role: str, now: dt.datetime, *,
                actor_id: int | None = None, client: str | None = None) -> Person:
    role = check_role(role)
    found = person_by_email(conn, email)
    current = membership(conn, found.id, organization_id) if found else None
    if found is None or current is None:
        raise NotFound(f"{normalize_email(email)} is not staff of this organization")
    if current.role == role:
        return found
    _keep_an_admin(conn, organization_id, found.id, losing=current.role == "admin" and actor_id is not None)
    conn.execute(staff_memberships.update().where(
        staff_memberships.c.organization_id == organization_id, staff_memberships.c.person_id == found.id)
        .values(role=role))
    sessions.end_all_of_person(conn, found.id, now)
    audit.record(conn, audit.ROLE_CHANGED, now, organization_id=organization_id, person_id=actor_id, client=client,
                 detail={"email": found.email, "from": current.role, "to": role})
    return found


def disable(conn: sa.Connection, organization_id: int, email: str, now: dt.datetime, *,
            actor_id: int | None = None, client: str | None = None) -> Person:
    found = person_by_email(conn, email)
    current = membership(conn, found.id, organization_id) if found else None
    if found is None or current is None:
        raise NotFound(f"{normalize_email(email)} is not active staff of this organization")
    _keep_an_admin(conn, organization_id, found.id, losing=current.role == "admin" and actor_id is not None)
    conn.execute(staff_memberships.update().where(
        staff_memberships.c.organization_id == organization_id, staff_memberships.c.person_id == found.id)
        .values(disabled_at=now))
    sessions.end_all_of_person(conn, found.id, now)
    audit.record(conn, audit.STAFF_DISABLED, now, organization_id=organization_id, person_id=actor_id,
                 client=client, detail={"email": found.email})
    return found


def _keep_an_admin(conn: sa.Connection, organization_id: int, person_id: int, *, losing: bool) -> None:
    """From the back office (an acting person), the last admin cannot be demoted or disabled, so a click cannot
    lock the team out; the operator's CLI can (and can make a new admin)."""
    if not losing:
        return
    others = conn.scalar(sa.select(sa.func.count()).select_from(staff_memberships).where(
        staff_memberships.c.organization_id == organization_id, staff_memberships.c.role == "admin",
        staff_memberships.c.disabled_at.is_(None), staff_memberships.c.person_id != person_id))
    if not others:
        raise Conflict("the organization would have no admin left", code="last_admin")


def set_require_totp(conn: sa.Connection, organization_id: int, required: bool, now: dt.datetime, *,
                     actor_id: int | None = None, client: str | None = None) -> None:
    conn.execute(organizations.update().where(organizations.c.id == organization_id)
                 .values(staff_require_totp=required))
    audit.record(conn, audit.TOTP_REQUIRED_CHANGED, now, organization_id=organization_id, person_id=actor_id,
                 client=client, detail={"required": required})


# -- TOTP ---------------------------------------------------------------------------------------------------


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def _accepted_step(secret: str, code: str, now: dt.datetime, last_step: int | None) -> int | None:
    """The time step `code` is valid for (this one or its neighbours, for clocks a little apart), if it is
    later than the last step accepted; else None."""
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    step = totp.timecode(now)
    for candidate in (step, step - 1, step + 1):
        if (last_step is None or candidate > last_step) and secrets.compare_digest(
                totp.generate_otp(candidate), code):
            return candidate
    return None


def enable_totp(conn: sa.Connection, person_id: int, secret: str, code: str, now: dt.datetime, *,
                organization_id: int | None = None, client: str | None = None) -> bool:
    """Turn TOTP on with a secret shown to the person, once they typed a code from it. False: wrong code."""
    step = _accepted_step(secret, code, now, None)
    if step is None:
        return False
    conn.execute(staff_people.update().where(staff_people.c.id == person_id).values(
        totp_secret=secret, totp_enabled_at=now, totp_last_step=step))
    audit.record(conn, audit.TOTP_ENABLED, now, organization_id=organization_id, person_id=person_id,
                 client=client)
    return True


def check_totp(conn: sa.Connection, person_id: int, code: str, now: dt.datetime) -> bool:
    """A sign-in's second step: the code is valid now and newer than the last one accepted (which it becomes).
    The row is locked, so two requests with the same code cannot both pass."""
    row = conn.execute(sa.select(staff_people.c.totp_secret, staff_people.c.totp_last_step).where(
        staff_people.c.id == person_id, staff_people.c.totp_enabled_at.is_not(None)).with_for_update()).first()
    if row is None or not row.totp_secret:
        return False
    step = _accepted_step(row.totp_secret, code, now, row.totp_last_step)
    if step is None:
        return False
    conn.execute(staff_people.update().where(staff_people.c.id == person_id).values(totp_last_step=step))
    return True
