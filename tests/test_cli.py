"""The `portal` command as an operator uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from portal.app import create_app
from portal.cli import main
from portal.settings import Settings
from tests.conftest import ENCRYPTION_KEY, invoice_body


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("PORTAL_DATABASE_URL", url)
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", ENCRYPTION_KEY)
    monkeypatch.chdir(tmp_path)
    return {"PORTAL_DATABASE_URL": url}


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_operator_creates_an_org_and_a_key_that_works_then_revokes_it(env: dict[str, str], tmp_path: Path) -> None:
    run("db", "upgrade")
    run("db", "upgrade")  # idempotent
    run("org", "create", "acme", "--name", "Acme SA")
    assert "acme\tAcme SA" in run("org", "list")
    key = run("apikey", "create", "acme", "--name", "ERP").strip().splitlines()[-1]
    assert key.startswith("qtc_")

    app = create_app(Settings(database_url=env["PORTAL_DATABASE_URL"], storage_dir=tmp_path / "docs"))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:  # the app opens the database
        assert client.get("/api/v1/invoices").status_code == 200

        listing = run("apikey", "list", "acme")
        assert "ERP" in listing and "active" in listing and key not in listing
        key_id = listing.split("\t")[0]
        run("apikey", "revoke", "acme", key_id)
        assert "revoked" in run("apikey", "list", "acme")
        assert client.get("/api/v1/invoices").status_code == 401


def test_mistakes_are_reported_not_raised(env: dict[str, str]) -> None:
    run("db", "upgrade")
    run("org", "create", "acme", "--name", "Acme")
    for args in (["org", "create", "acme", "--name", "Again"], ["org", "create", "Not A Slug", "--name", "x"],
                 ["apikey", "create", "nobody", "--name", "x"], ["apikey", "revoke", "acme", "99"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        assert result.output.startswith("error: ")


def test_links_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    run("db", "upgrade")
    run("org", "create", "acme", "--name", "Acme")
    key = run("apikey", "create", "acme", "--name", "ERP").strip().splitlines()[-1]
    app = create_app(Settings(database_url=env["PORTAL_DATABASE_URL"], storage_dir=tmp_path / "docs",
                              base_url="http://testserver"))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as api:
        api.put("/api/v1/customers/C1", json={"name": "Dupont", "locale": "fr"})

    url = run("link", "create", "acme", "C1", "--days", "7").strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:8000/l/"), "the CLI uses PORTAL_BASE_URL's default"
    with TestClient(app, follow_redirects=False) as browser:
        assert browser.get("/l/" + url.rsplit("/", 1)[1]).status_code == 303
        assert "revoked 1 link(s)" in run("link", "revoke", "acme", "C1")
        assert browser.get("/portal").status_code == 401

    for external_id, number in (("I1", "F-1"), ("I2", "F-2")):
        answer = api.put(f"/api/v1/invoices/{external_id}", json=invoice_body(number=number))
        assert answer.status_code == 201, answer.text
    scoped = run("link", "create", "acme", "C1", "--invoice", "I2").strip().splitlines()[-1]
    assert browser.get("/l/" + scoped.rsplit("/", 1)[1]).status_code == 303
    history = browser.get("/portal").text
    assert "F-2" in history and "F-1" not in history, "the link shows only the invoice it was made for"
    assert CliRunner().invoke(main, ["link", "create", "acme", "C1", "--invoice", "NOPE"]).exit_code == 1

    run("org", "brand", "acme", "--color", "#123456", "--contact-email", "help@acme.example")
    assert CliRunner().invoke(main, ["org", "brand", "acme", "--color", "blue"]).exit_code == 1


def test_payment_settings_from_the_command_line(env: dict[str, str]) -> None:
    from portal.db import Database
    from portal.domain.payment_settings import config_for

    run("db", "upgrade")
    run("org", "create", "acme", "--name", "Acme")
    run("payments", "configure", "acme", "--providers", "mollie", "--mollie-key", "test_abc",
        "--mollie-methods", "ideal,bancontact", "--stripe-webhook-secret", "whsec_new", "--stripe-webhook-secret",
        "whsec_old")
    database = Database.from_url(env["PORTAL_DATABASE_URL"])
    config = database.run(lambda conn: config_for(conn, 1, Settings(stripe_api_key="sk_test_default",
                                                                   encryption_keys=(ENCRYPTION_KEY,))))
    database.dispose()
    assert config.providers == ("mollie",)
    assert config.mollie_methods == ("ideal", "bancontact")
    assert config.stripe_webhook_secrets == ("whsec_new", "whsec_old")
    refused = CliRunner().invoke(main, ["payments", "configure", "acme", "--providers", "paypal"])
    assert refused.exit_code == 1
    assert "asked 0 checkout(s)" in run("reconcile")


def test_partial_payments_from_the_command_line(env: dict[str, str]) -> None:
    from portal.db import Database
    from portal.domain.payment_settings import PartialPolicy, partial_policy

    run("db", "upgrade")
    run("org", "create", "acme", "--name", "Acme")
    database = Database.from_url(env["PORTAL_DATABASE_URL"])

    def policy() -> PartialPolicy:
        return database.run(lambda conn: partial_policy(conn, 1))

    try:
        assert policy() == PartialPolicy(), "full amounts only until the organization allows less"
        run("payments", "configure", "acme", "--partial-payments", "--partial-minimum", "10.00")
        assert policy() == PartialPolicy(True, 1000, "EUR")
        run("payments", "configure", "acme", "--partial-minimum", "500", "--currency", "JPY")
        assert policy() == PartialPolicy(True, 500, "JPY"), "the minimum in the currency's own decimals"
        for bad, message in ((["--partial-minimum", "10.001"], "EUR amounts have at most 2 decimals"),
                             (["--partial-minimum", "10", "--currency", "JPY2"], "unknown currency"),
                             (["--partial-minimum", "ten"], "must be a decimal string")):
            refused = CliRunner().invoke(main, ["payments", "configure", "acme", "--partial-payments", *bad])
            assert refused.exit_code == 1 and message in refused.output, refused.output
            assert policy() == PartialPolicy(True, 500, "JPY"), "nothing written"
        run("payments", "configure", "acme", "--no-partial-payments")
        assert policy() == PartialPolicy()
    finally:
        database.dispose()
