"""Guessing is throttled per client address, in the database: failed link tokens and failed API keys. The
windows are shared by every server process (two apps on one database here) and expire by the clock."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from portal.app import create_app
from portal.domain.rate_limits import API_KEY_FAILURES, LINK_TOKEN_FAILURES
from tests.conftest import Tenant
from tests.web.test_portal import link_for


def second_process(app: Any) -> Any:
    services = app.state.services
    return create_app(services.settings, clock=services.clock, database=services.db)


def test_failed_link_tokens_lock_out_the_address_until_the_window_moves_on(tenant: Tenant, app: Any,
                                                                          clock: Any) -> None:
    good = link_for(tenant).removeprefix("http://testserver")
    attacker = TestClient(app, follow_redirects=False, client=("203.0.113.7", 40000))
    attacker_elsewhere = TestClient(second_process(app), follow_redirects=False, client=("203.0.113.7", 40001))
    failures = LINK_TOKEN_FAILURES.hits
    for i in range(failures):
        client = attacker if i % 2 == 0 else attacker_elsewhere
        assert client.get(f"/l/guess-{i}").status_code == 404
    refused = attacker.get(good)
    assert refused.status_code == 429, "even a good token, once the address is over the limit"
    assert "set-cookie" not in refused.headers
    assert "Too many attempts" in refused.text
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2 * 600
    assert attacker_elsewhere.get(good).status_code == 429, "the other process counts the same window"

    neighbour = TestClient(app, follow_redirects=False, client=("198.51.100.9", 40000))
    assert neighbour.get(good).status_code == 303, "other addresses are not affected"

    clock.advance(seconds=retry_after - 1)
    assert attacker.get(good).status_code == 429
    clock.advance(seconds=1)
    assert attacker.get(good).status_code == 303, "the lockout expires"


def test_links_that_expired_or_were_revoked_count_as_failures(tenant: Tenant, app: Any) -> None:
    revoked = link_for(tenant).removeprefix("http://testserver")
    tenant.client.post("/api/v1/customers/C1/portal-links/revoke")
    browser = TestClient(app, follow_redirects=False, client=("203.0.113.8", 40000))
    for _ in range(LINK_TOKEN_FAILURES.hits):
        assert browser.get(revoked).status_code == 404
    assert browser.get(revoked).status_code == 429


def test_failed_api_keys_lock_out_the_address_with_problem_json(tenant: Tenant, app: Any, clock: Any) -> None:
    here = ("203.0.113.9", 40000)
    guesser = TestClient(app, client=here)
    guesser_elsewhere = TestClient(second_process(app), client=here)
    for i in range(API_KEY_FAILURES.hits):
        client = guesser if i % 2 == 0 else guesser_elsewhere
        answer = client.get("/api/v1/invoices", headers={"Authorization": f"Bearer qtc_guess{i}"})
        assert answer.status_code == 401
    refused = guesser.get("/api/v1/invoices", headers={"Authorization": f"Bearer {tenant.key}"})
    assert refused.status_code == 429, "even the right key, once the address is over the limit"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429 and refused.json()["type"].endswith("/too-many-requests")
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2 * 600
    assert guesser_elsewhere.get("/api/v1/invoices", headers={
        "Authorization": f"Bearer {tenant.key}"}).status_code == 429

    billing_system = TestClient(app, client=("198.51.100.10", 40000))
    assert billing_system.get("/api/v1/invoices", headers={
        "Authorization": f"Bearer {tenant.key}"}).status_code == 200, "other addresses are not affected"
    # A request without any key is not a guess: it is answered 401 as before, and counts nothing.
    assert TestClient(app, client=("198.51.100.10", 40000)).get("/api/v1/invoices").status_code == 401

    clock.advance(seconds=retry_after)
    assert guesser.get("/api/v1/invoices", headers={"Authorization": f"Bearer {tenant.key}"}).status_code == 200


def test_good_keys_never_count(tenant: Tenant, app: Any) -> None:
    busy = TestClient(app, client=("203.0.113.10", 40000), headers={"Authorization": f"Bearer {tenant.key}"})
    for _ in range(API_KEY_FAILURES.hits + 5):
        assert busy.get("/api/v1/invoices").status_code == 200
