"""Staff accounts in the domain: people with a role per organization, argon2id passwords (rehashed when the
parameters change), one-time tokens stored as hashes, TOTP codes used once, the append-only audit log; and
the dashboard's figures, scoped to one organization."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from portal.db.staff import audit_log, staff_people, staff_tokens
from portal.domain import organizations as orgs
from portal.domain import staff as staff_domain
from portal.domain.dashboard import dashboard
from portal.errors import Conflict, InvalidInput
from tests.conftest import Tenant


@pytest.fixture
def two_orgs(database: Any, clock: Any) -> tuple[orgs.Organization, orgs.Organization]:
    return database.run(lambda conn: (orgs.create_organization(conn, "acme", "Acme", clock.now()),
                                      orgs.create_organization(conn, "globex", "Globex", clock.now())))


def test_one_person_is_staff_of_several_organizations_with_a_role_in_each(database: Any, clock: Any,
                                                                           two_orgs: Any) -> None:
    acme, globex = two_orgs

    def setup(conn: Any) -> Any:
        first = staff_domain.add_staff(conn, acme.id, "Ann@Firm.example ", "finance", clock.now())
        second = staff_domain.add_staff(conn, globex.id, "ann@firm.example", "viewer", clock.now())
        return first, second, staff_domain.memberships(conn, first.id)

    first, second, memberships = database.run(setup)
    assert first.id == second.id and first.email == "ann@firm.example"
    assert [(m.organization_slug, m.role) for m in memberships] == [("acme", "finance"), ("globex", "viewer")]
    with pytest.raises(Conflict):
        database.run(lambda conn: staff_domain.add_staff(conn, acme.id, "ann@firm.example", "admin", clock.now()))
    with pytest.raises(InvalidInput):
        database.run(lambda conn: staff_domain.add_staff(conn, acme.id, "not an email", "admin", clock.now()))
    with pytest.raises(InvalidInput):
        database.run(lambda conn: staff_domain.add_staff(conn, acme.id, "b@firm.example", "owner", clock.now()))


def test_passwords_are_argon2id_and_old_parameters_are_noticed(database: Any, clock: Any, two_orgs: Any) -> None:
    acme, _ = two_orgs
    person = database.run(lambda conn: staff_domain.add_staff(conn, acme.id, "ann@acme.example", "admin",
                                                              clock.now()))
    database.run(lambda conn: staff_domain.set_password(conn, person.id, "twelve chars!", clock.now()))
    stored = database.run(lambda conn: conn.scalar(sa.select(staff_people.c.password_hash)))
    assert stored.startswith("$argon2id$") and "twelve" not in stored
    assert staff_domain.verify_password(stored, "twelve chars!") == (True, False)
    assert staff_domain.verify_password(stored, "twelve chars?") == (False, False)
    assert staff_domain.verify_password(None, "twelve chars!") == (False, False)
    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash("twelve chars!")
    assert staff_domain.verify_password(weak, "twelve chars!") == (True, True)
    with pytest.raises(InvalidInput):
        database.run(lambda conn: staff_domain.set_password(conn, person.id, "short", clock.now()))


def test_tokens_are_stored_hashed_one_time_and_expire(database: Any, clock: Any, two_orgs: Any) -> None:
    acme, _ = two_orgs

    def invite(conn: Any) -> str:
        person = staff_domain.add_staff(conn, acme.id, "ann@acme.example", "viewer", clock.now())
        return staff_domain.issue_token(conn, person.id, staff_domain.SET_PASSWORD, clock.now())

    token = database.run(invite)
    stored = database.run(lambda conn: conn.scalar(sa.select(staff_tokens.c.token_hash)))
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    database.run(lambda conn: staff_domain.set_password_with_token(conn, token, "a long new password", clock.now()))
    with pytest.raises(staff_domain.InvalidStaffToken):
        database.run(lambda conn: staff_domain.set_password_with_token(conn, token, "another password!", clock.now()))
    reset = database.run(lambda conn: staff_domain.issue_token(
        conn, staff_domain.person_by_email(conn, "ann@acme.example").id, staff_domain.RESET_PASSWORD, clock.now()))
    later = clock.now() + dt.timedelta(hours=1, seconds=1)
    with pytest.raises(staff_domain.InvalidStaffToken):
        database.run(lambda conn: staff_domain.token_person(conn, reset, later))


def test_a_totp_code_is_accepted_once(database: Any, clock: Any, two_orgs: Any) -> None:
    acme, _ = two_orgs
    person = database.run(lambda conn: staff_domain.add_staff(conn, acme.id, "ann@acme.example", "viewer",
                                                              clock.now()))
    secret = staff_domain.new_totp_secret()
    totp = pyotp.TOTP(secret)
    assert not database.run(staff_domain.enable_totp, person.id, secret, "000000", clock.now())
    assert database.run(staff_domain.enable_totp, person.id, secret, totp.at(clock.now()), clock.now())
    later = clock.now() + dt.timedelta(seconds=30)
    code = totp.at(later)
    assert database.run(staff_domain.check_totp, person.id, code, later)
    assert not database.run(staff_domain.check_totp, person.id, code, later), "replayed"


def test_the_audit_log_is_append_only(database: Any, clock: Any, two_orgs: Any) -> None:
    acme, _ = two_orgs
    database.run(lambda conn: staff_domain.add_staff(conn, acme.id, "ann@acme.example", "viewer", clock.now()))
    with pytest.raises(sa.exc.DatabaseError):
        database.run(lambda conn: conn.execute(audit_log.update().values(action="nothing happened")))
    assert database.run(lambda conn: conn.scalar(sa.select(audit_log.c.action))) == "staff_invited"


def test_the_dashboard_sums_one_organization(tenant: Tenant, other_tenant: Tenant, database: Any,
                                             clock: Any) -> None:
    today = clock.now().date()

    def due(days_ago: int) -> str:
        return (today - dt.timedelta(days=days_ago)).isoformat()

    for external_id, days_ago, total in (("A", -5, "100.00"), ("B", 10, "20.00"), ("C", 45, "30.00"),
                                         ("D", 75, "40.00"), ("E", 200, "50.00")):
        response = tenant.put_invoice(external_id, number=external_id, due_date=due(days_ago), total=total,
                                      issue_date=due(days_ago + 30), lines=[])
        assert response.status_code == 201, response.text
    assert tenant.put_invoice("P", number="P", status="paid", total="7.00", lines=[]).status_code == 201
    assert tenant.put_invoice("U", number="U", currency="USD", total="9.99", lines=[]).status_code == 201
    other_tenant.put_customer()
    assert other_tenant.put_invoice("X", number="X", due_date=due(10), issue_date=due(40), total="999.00",
                                   lines=[]).status_code == 201
    board = database.run(dashboard, tenant.org.id, today)
    assert board.outstanding == {"EUR": 24000, "USD": 999}
    assert board.overdue == {"EUR": 14000}
    assert board.overdue_by_age == {"EUR": {"1-30": 2000, "31-60": 3000, "61-90": 4000, "90+": 5000}}
    assert board.paid_otherwise == {"EUR": 700} and board.paid_online == {}
    assert (board.unanswered_remarks, board.open_reviews, board.dead_deliveries, board.open_conflicts) == (0, 0, 0, 0)
