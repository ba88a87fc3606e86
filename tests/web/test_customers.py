"""Customers over the machine API."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant


def test_create_update_unchanged(tenant: Tenant) -> None:
    body = {"name": "Café Zuid", "email": "boekhouding@zuid.example", "locale": "nl-BE",
            "address": {"line1": "Kerkstraat 1", "postal_code": "2000", "city": "Antwerpen", "country": "BE"},
            "vat_number": "BE0123456789"}
    created = tenant.client.put("/api/v1/customers/K-9", json=body)
    assert created.status_code == 201
    assert created.json()["address"]["city"] == "Antwerpen"
    assert tenant.client.put("/api/v1/customers/K-9", json=body).status_code == 200
    changed = tenant.client.put("/api/v1/customers/K-9", json={**body, "locale": "fr-BE"})
    assert changed.json()["locale"] == "fr-BE"
    read = tenant.client.get("/api/v1/customers/K-9").json()
    assert (read["name"], read["vat_number"], read["locale"]) == ("Café Zuid", "BE0123456789", "fr-BE")


@pytest.mark.parametrize("locale", ["fr", "nl", "en", "de", "sv", "sv-SE", "de-AT"])
def test_supported_locales(tenant: Tenant, locale: str) -> None:
    assert tenant.client.put("/api/v1/customers/L", json={"name": "x", "locale": locale}).status_code == 201


@pytest.mark.parametrize(("body", "path"), [
    ({"name": "x", "locale": "es"}, "/locale"),
    ({"name": ""}, "/name"),
    ({"locale": "fr"}, "/name"),
    ({"name": "x", "email": "not-an-email"}, "/email"),
    ({"name": "x", "address": {"country": "Belgium"}}, "/address/country"),
    ({"name": "x", "phone": "123"}, "/phone"),
])
def test_invalid_customers_name_the_field(tenant: Tenant, body: dict[str, object], path: str) -> None:
    response = tenant.client.put("/api/v1/customers/BAD", json=body)
    assert response.status_code == 422
    assert path in [e["path"] for e in response.json()["errors"]]
    assert tenant.client.get("/api/v1/customers/BAD").status_code == 404


def test_control_characters_are_refused_not_stored(tenant: Tenant) -> None:
    response = tenant.client.put("/api/v1/customers/NUL", json={"name": "Dupont\u0000SA"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"path": "/name", "message": "must not contain control characters"}]
    tabbed = tenant.client.put("/api/v1/customers/TAB", json={"name": "Dupont SA\tBE"})
    assert tabbed.status_code == 201


SINGLE_LINE = "must be a single line, without line breaks or bidirectional control characters"


@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n", "\u2028", "\u2029", "\u202a", "\u202e", "\u2066",
                                     "\u2069"])
@pytest.mark.parametrize(("field", "path"), [
    ("name", "/name"), ("email", "/email"), ("vat_number", "/vat_number"), ("city", "/address/city"),
    ("line1", "/address/line1"),
])
def test_single_line_fields_refuse_line_breaks_and_bidi_controls(tenant: Tenant, breaker: str, field: str,
                                                                 path: str) -> None:
    """A line break in a name or an email could forge a second header line in the mail sent to the debtor;
    a right-to-left override shows the name in another order than it is stored."""
    value = f"compta{breaker}@dupont.example" if field == "email" else f"Dupont{breaker}SA"
    body: dict[str, object] = {"name": "Dupont SA"}
    if path.startswith("/address/"):
        body["address"] = {field: value}
    else:
        body[field] = value
    response = tenant.client.put("/api/v1/customers/ML", json=body)
    assert response.status_code == 422
    assert {"path": path, "message": SINGLE_LINE} in response.json()["errors"]
    assert tenant.client.get("/api/v1/customers/ML").status_code == 404
