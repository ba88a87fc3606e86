"""The local Stripe emulator, driven by the real, unmodified stripe SDK over loopback.

Webhooks go to a real loopback receiver (ThreadedServer) and are verified with `stripe.Webhook.construct_event`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quittance_emulators.forms import FormError, as_list, check_api_key, parse_brackets
from quittance_emulators.server import ThreadedServer
from quittance_emulators.stripe import StripeEmulator, StripeEmulatorError

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

SECRET = "whsec_test_emulator_secret"
SUCCESS = "http://127.0.0.1:9/return?session_id={CHECKOUT_SESSION_ID}"
CANCEL = "http://127.0.0.1:9/cancel"


class Receiver:
    """A webhook endpoint on loopback that records what it receives and answers the queued statuses (then 200)."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.server = ThreadedServer(Starlette(routes=[Route("/hook", self.hook, methods=["POST"])]))
        self.url = f"{self.server.base_url}/hook"

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.received.append((body, dict(request.headers)))
            status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status)

    def events(self, secret: str = SECRET) -> list[Any]:
        with self.lock:
            return [stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
                    for body, headers in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.server.start()
    yield receiver
    receiver.server.stop()


@pytest.fixture
def emu(receiver: Receiver) -> Iterator[StripeEmulator]:
    emulator = StripeEmulator({"sk_test_x"}, webhook_secrets=[SECRET]).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emu: StripeEmulator) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_x", base_addresses={"api": emu.base_url})


def params(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {"price_data": {"currency": "eur", "unit_amount": 12050, "product_data": {"name": "Invoice 2026-001"}},
             "quantity": 1},
            {"price_data": {"currency": "eur", "unit_amount": 999, "product_data": {"name": "Invoice 2026-002"}},
             "quantity": 2},
        ],
        "success_url": SUCCESS,
        "cancel_url": CANCEL,
        "client_reference_id": "att_42",
        "metadata": {"attempt_id": "att_42", "org": "Café Zoë"},
        "payment_intent_data": {"metadata": {"attempt_id": "att_42", "note": "Grüße"}},
        "customer_email": "debtor@example.com",
        "locale": "nl",
        "payment_method_types": ["card"],
    }
    base.update(changes)
    return base


def pay(emu: StripeEmulator, session_id: str, outcome: str) -> httpx.Response:
    with httpx.Client(trust_env=False) as http:
        page = http.get(f"{emu.base_url}/c/pay/{session_id}")
        assert page.status_code == 200 and "TEST MODE — Stripe emulator" in page.text
        assert f'value="{outcome}"' in page.text
        return http.post(f"{emu.base_url}/c/pay/{session_id}", data={"outcome": outcome})


def test_create_retrieve_replay_and_changed_body(client: stripe.StripeClient, emu: StripeEmulator) -> None:
    session = client.v1.checkout.sessions.create(params(), {"idempotency_key": "cs-attempt-1"})
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert (session.status, session.payment_status, session.payment_intent) == ("open", "unpaid", None)
    assert session.amount_total == 12050 + 2 * 999 and session.currency == "eur"
    assert session.url == f"{emu.base_url}/c/pay/{session.id}"
    assert session.success_url == SUCCESS and session.client_reference_id == "att_42"
    assert session.metadata.to_dict() == {"attempt_id": "att_42", "org": "Café Zoë"}
    assert session.livemode is False and session.locale == "nl" and session.customer_email == "debtor@example.com"
    assert session.expires_at - session.created == 86400
    again = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]})
    assert again.id == session.id and [li.quantity for li in again.line_items.data] == [1, 2]
    replay = client.v1.checkout.sessions.create(params(), {"idempotency_key": "cs-attempt-1"})
    assert replay.id == session.id and len(emu._store["checkout.session"]) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create(params(client_reference_id="other"), {"idempotency_key": "cs-attempt-1"})


def test_bad_api_key_and_missing_object(emu: StripeEmulator) -> None:
    bad = stripe.StripeClient("sk_test_bad", base_addresses={"api": emu.base_url})
    with pytest.raises(stripe.AuthenticationError, match=r"Invalid API Key provided: sk_test_\*\*\*\*"):
        bad.v1.checkout.sessions.create(params())
    with pytest.raises(stripe.AuthenticationError, match=r"sk_live_\*\*\*\*"):
        stripe.StripeClient("sk_live_x", base_addresses={"api": emu.base_url}).v1.checkout.sessions.retrieve("cs_x")
    assert check_api_key("Bearer sk_test_anything", None) == "sk_test_anything"
    with pytest.raises(StripeEmulatorError):
        check_api_key("Bearer sk_live_x", None)
    good = stripe.StripeClient("sk_test_x", base_addresses={"api": emu.base_url})
    with pytest.raises(stripe.InvalidRequestError, match="No such checkout.session: 'cs_x'") as info:
        good.v1.checkout.sessions.retrieve("cs_x")
    assert info.value.code == "resource_missing"


@pytest.mark.parametrize(("changes", "param"), [
    ({"expires_at": int(time.time()) + 600}, "expires_at"),
    ({"expires_at": int(time.time()) + 2 * 86400}, "expires_at"),
    ({"mode": "subscription"}, "mode"),
    ({"success_url": None}, "success_url"),
    ({"client_reference_id": "x" * 201}, "client_reference_id"),
    ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
    ({"metadata": {"k" * 41: "v"}}, f"metadata[{'k' * 41}]"),
    ({"payment_intent_data": {"metadata": {"k": "v" * 501}}}, "payment_intent_data[metadata][k]"),
    ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": "12.5", "product_data": {"name": "x"}},
                      "quantity": 1}]}, "line_items[0][price_data][unit_amount]"),
    ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": -1, "product_data": {"name": "x"}},
                      "quantity": 1}]}, "line_items[0][price_data][unit_amount]"),
    ({"line_items": [*params()["line_items"], {"price_data": {"currency": "usd", "unit_amount": 1,
                                                              "product_data": {"name": "x"}}, "quantity": 1}]},
     "line_items[2][price_data][currency]"),
    ({"line_items": [params()["line_items"][0]] * 101}, "line_items"),
    ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": 1, "product_data": {"name": "x"}}}]},
     "line_items[0][quantity]"),
    ({"locale": "xx"}, "locale"),
    ({"surprise": "1"}, "surprise"),
])
def test_validation_errors_name_the_param(client: stripe.StripeClient, changes: dict[str, Any], param: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(params(**changes))
    assert info.value.param == param and info.value.http_status == 400


def test_an_error_is_replayed_for_the_same_key(emu: StripeEmulator) -> None:
    body = {"mode": "payment", "success_url": SUCCESS}
    headers = {"Authorization": "Bearer sk_test_x", "Idempotency-Key": "k-err"}
    with httpx.Client(base_url=emu.base_url, trust_env=False) as http:
        first = http.post("/v1/checkout/sessions", data=body, headers=headers)
        second = http.post("/v1/checkout/sessions", data=body, headers=headers)
    assert first.status_code == second.status_code == 400
    assert first.json() == second.json() and first.json()["error"]["param"] == "line_items"
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["request-id"] == first.headers["request-id"]


def test_success_via_the_hosted_page_and_a_verified_webhook(client: stripe.StripeClient, emu: StripeEmulator,
                                                            receiver: Receiver) -> None:
    assert emu.add_webhook_endpoint(receiver.url) == SECRET
    session = client.v1.checkout.sessions.create(params())
    reply = pay(emu, session.id, "success")
    assert reply.status_code == 303
    assert reply.headers["location"] == f"http://127.0.0.1:9/return?session_id={session.id}"
    emu.wait_for_deliveries(1)
    [event] = receiver.events()
    body, headers = receiver.received[0]
    assert headers["content-type"] == "application/json; charset=utf-8" and "Café Zoë".encode() in body
    assert event.type == "checkout.session.completed" and event.id.startswith("evt_")
    assert event.api_version == "2026-10-28.endive" and event.livemode is False
    done = event.data.object
    assert (done.id, done.status, done.payment_status, done.url) == (session.id, "complete", "paid", None)
    assert done.client_reference_id == "att_42" and done.payment_intent.startswith("pi_")
    assert event.data.previous_attributes.to_dict()["status"] == "open"
    fresh = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent"]})
    intent = fresh.payment_intent
    assert intent.status == "succeeded" and intent.amount == session.amount_total
    assert intent.metadata.to_dict() == {"attempt_id": "att_42", "note": "Grüße"}
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert charge.payment_intent == intent.id and charge.metadata.to_dict() == intent.metadata.to_dict()
    assert emu.deliveries[0]["status"] == 200 and emu.deliveries[0]["attempt"] == 1
    assert client.v1.events.retrieve(event.id).pending_webhooks == 0
    with httpx.Client(trust_env=False) as http:
        assert http.post(f"{emu.base_url}/c/pay/{session.id}", data={"outcome": "success"}).status_code == 400


def test_decline_keeps_the_session_open_and_allows_a_retry(client: stripe.StripeClient, emu: StripeEmulator,
                                                           receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    session = client.v1.checkout.sessions.create(params())
    reply = pay(emu, session.id, "decline")
    assert reply.status_code == 303 and reply.headers["location"] == f"/c/pay/{session.id}"
    with httpx.Client(trust_env=False) as http:
        assert "declined" in http.get(f"{emu.base_url}/c/pay/{session.id}").text
    assert emu.session(session.id)["status"] == "open"
    emu.complete(session.id, "success")
    emu.wait_for_deliveries(2)
    failed, completed = receiver.events()
    assert failed.type == "payment_intent.payment_failed"
    assert failed.data.object.last_payment_error.code == "card_declined"
    assert failed.data.object.metadata.attempt_id == "att_42"
    assert completed.type == "checkout.session.completed" and completed.data.object.payment_status == "paid"
    assert completed.data.object.payment_intent == failed.data.object.id


@pytest.mark.parametrize(("outcome", "last", "final_status"), [
    ("delayed_success", "checkout.session.async_payment_succeeded", "paid"),
    ("delayed_failure", "checkout.session.async_payment_failed", "unpaid"),
])
def test_delayed_methods_complete_unpaid_then_settle(client: stripe.StripeClient, emu: StripeEmulator,
                                                    receiver: Receiver, outcome: str, last: str,
                                                    final_status: str) -> None:
    emu.add_webhook_endpoint(receiver.url)
    session = client.v1.checkout.sessions.create(params())
    assert pay(emu, session.id, outcome).status_code == 303
    emu.wait_for_deliveries(2)
    completed, settled = receiver.events()
    assert completed.type == "checkout.session.completed" and completed.data.object.payment_status == "unpaid"
    assert settled.type == last and settled.data.object.payment_status == final_status
    intent = client.v1.payment_intents.retrieve(completed.data.object.payment_intent)
    assert intent.status == ("succeeded" if final_status == "paid" else "requires_payment_method")


def test_cancel_redirects_and_api_expire(client: stripe.StripeClient, emu: StripeEmulator,
                                         receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    session = client.v1.checkout.sessions.create(params())
    reply = pay(emu, session.id, "cancel")
    assert reply.status_code == 303 and reply.headers["location"] == CANCEL
    expired = client.v1.checkout.sessions.expire(session.id, options={"idempotency_key": "exp-1"})
    assert (expired.status, expired.url) == ("expired", None)
    with pytest.raises(stripe.InvalidRequestError, match="status of `expired`"):
        client.v1.checkout.sessions.expire(session.id)
    emu.wait_for_deliveries(1)
    [event] = receiver.events()
    assert event.type == "checkout.session.expired" and event.request.idempotency_key == "exp-1"


def test_secret_rotation_signs_with_both_until_expired(client: stripe.StripeClient, emu: StripeEmulator,
                                                       receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    new = emu.rotate_secret(receiver.url)
    assert new.startswith("whsec_") and new != SECRET
    emu.complete(client.v1.checkout.sessions.create(params()).id, "success")
    emu.wait_for_deliveries(1)
    body, headers = receiver.received[0]
    assert headers["stripe-signature"].count("v1=") == 2
    for secret in (SECRET, new):
        assert stripe.Webhook.construct_event(body, headers["stripe-signature"], secret).type
    emu.expire_old_secrets(receiver.url)
    emu.expire(client.v1.checkout.sessions.create(params()).id)
    emu.wait_for_deliveries(2)
    body, headers = receiver.received[1]
    assert headers["stripe-signature"].count("v1=") == 1
    stripe.Webhook.construct_event(body, headers["stripe-signature"], new)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["stripe-signature"], SECRET)


def test_refunds_partial_then_full(client: stripe.StripeClient, emu: StripeEmulator, receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    session = client.v1.checkout.sessions.create(params())
    emu.complete(session.id, "success")
    intent_id = emu.session(session.id)["payment_intent"]
    refund = client.v1.refunds.create({"payment_intent": intent_id, "amount": 1000})
    assert refund.id.startswith("re_") and refund.amount == 1000 and refund.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create({"payment_intent": intent_id, "amount": session.amount_total})
    assert info.value.param == "amount"
    assert emu.refund(intent_id).startswith("re_")
    emu.wait_for_deliveries(3)
    _, partial, full = receiver.events()
    assert partial.type == full.type == "charge.refunded"
    assert (partial.data.object.amount_refunded, partial.data.object.refunded) == (1000, False)
    assert (full.data.object.amount_refunded, full.data.object.refunded) == (session.amount_total, True)
    assert full.data.object.payment_intent == intent_id
    assert full.data.previous_attributes.amount_refunded == 1000


def test_dispute_created_and_closed(client: stripe.StripeClient, emu: StripeEmulator, receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    session = client.v1.checkout.sessions.create(params())
    emu.complete(session.id, "success")
    intent_id = emu.session(session.id)["payment_intent"]
    dispute_id = emu.dispute(intent_id, close_as="lost")
    emu.wait_for_deliveries(3)
    _, created, closed = receiver.events()
    assert (created.type, closed.type) == ("charge.dispute.created", "charge.dispute.closed")
    assert created.data.object.id == closed.data.object.id == dispute_id
    assert closed.data.object.status == "lost" and closed.data.object.payment_intent == intent_id
    assert closed.data.object.amount == session.amount_total and closed.data.object.reason == "fraudulent"


def test_redelivery_duplicates_and_listing(client: stripe.StripeClient, emu: StripeEmulator,
                                           receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    emu.complete(client.v1.checkout.sessions.create(params()).id, "success")
    first = emu.events[0]["id"]
    emu.redeliver(first)
    twin = emu.duplicate_with_new_id(first)
    emu.wait_for_deliveries(3)
    a, b, c = receiver.events()
    assert a.id == b.id == first and c.id == twin != first
    assert c.data.object.id == a.data.object.id and c.type == a.type
    listed = client.v1.events.list({"delivery_success": False})
    assert listed.data == []
    assert [e.id for e in client.v1.events.list().data] == [twin, first]


def test_a_failed_delivery_is_retried(client: stripe.StripeClient, emu: StripeEmulator, receiver: Receiver) -> None:
    receiver.statuses = [500]
    emu.add_webhook_endpoint(receiver.url)
    emu.expire(client.v1.checkout.sessions.create(params()).id)
    emu.wait_for_deliveries(2)
    assert [(d["attempt"], d["status"]) for d in emu.deliveries] == [(1, 500), (2, 200)]
    assert emu.deliveries[0]["error"] == "HTTP 500" and emu.deliveries[1]["error"] is None
    assert len({e.id for e in receiver.events()}) == 1


def test_retries_stop_after_three_tries(client: stripe.StripeClient, emu: StripeEmulator,
                                        receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 302, 500]
    emu.add_webhook_endpoint(receiver.url)
    emu.expire(client.v1.checkout.sessions.create(params()).id)
    emu.wait_for_deliveries(3)
    time.sleep(0.3)
    assert [d["status"] for d in emu.deliveries] == [500, 503, 302]
    assert [e.id for e in client.v1.events.list({"delivery_success": False}).data] == [emu.events[0]["id"]]


def test_held_events_are_released_in_reverse(client: stripe.StripeClient, emu: StripeEmulator,
                                             receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    emu.hold_events(True)
    first = client.v1.checkout.sessions.create(params())
    second = client.v1.checkout.sessions.create(params())
    emu.expire(first.id)
    emu.expire(second.id)
    time.sleep(0.1)
    assert receiver.received == []
    emu.release_events(reverse=True)
    emu.wait_for_deliveries(2)
    assert [e.data.object.id for e in receiver.events()] == [second.id, first.id]


def test_sessions_expire_on_their_own_at_expires_at(client: stripe.StripeClient, emu: StripeEmulator,
                                                    receiver: Receiver) -> None:
    emu.add_webhook_endpoint(receiver.url)
    session = client.v1.checkout.sessions.create(params(expires_at=int(time.time()) + 1800))
    with emu._lock:
        emu._store["checkout.session"][session.id]["expires_at"] = int(time.time()) - 1   # as if 30 min passed
    emu.wait_for_deliveries(1, timeout=2.5)
    [event] = receiver.events()
    assert event.type == "checkout.session.expired" and event.data.object.id == session.id
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"


def test_build_webhook_for_in_process_tests(client: stripe.StripeClient, emu: StripeEmulator) -> None:
    emu.expire(client.v1.checkout.sessions.create(params()).id)
    body, headers = emu.build_webhook(emu.events[0])
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], SECRET)
    assert event.type == "checkout.session.expired"
    old_body, old_headers = emu.build_webhook(emu.events[0], "whsec_other", timestamp=int(time.time()) - 600)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(old_body, old_headers["Stripe-Signature"], "whsec_other")


def test_control_endpoints(client: stripe.StripeClient, emu: StripeEmulator, receiver: Receiver) -> None:
    session = client.v1.checkout.sessions.create(params())
    with httpx.Client(base_url=f"{emu.base_url}/_control", trust_env=False) as http:
        secret = http.post("/endpoints", json={"url": receiver.url}).json()["secret"]
        assert secret == SECRET
        done = http.post(f"/sessions/{session.id}/complete", data={"outcome": "success"}).json()
        refund = http.post(f"/payment_intents/{done['payment_intent']}/refund", json={"amount": 500}).json()
        assert refund["refund"].startswith("re_")
        dispute = http.post(f"/payment_intents/{done['payment_intent']}/dispute", json={}).json()["dispute"]
        assert http.post(f"/disputes/{dispute}/close", json={"status": "won"}).status_code == 200
        assert http.post(f"/disputes/{dispute}/close", json={"status": "won"}).status_code == 400
        new = http.post("/endpoints/rotate", json={"url": receiver.url}).json()["secret"]
        assert new != SECRET
        assert http.post("/sessions/cs_nope/expire").status_code == 404
        emu.wait_for_deliveries(4)
        state = http.get("/state").json()
    assert [e["type"] for e in state["events"]] == ["checkout.session.completed", "charge.refunded",
                                                    "charge.dispute.created", "charge.dispute.closed"]


def test_bracket_parser() -> None:
    parsed = parse_brackets("line_items[0][price_data][currency]=eur&line_items[1][quantity]=2"
                            "&metadata[0]=zero&expand[]=a&expand[]=b&flag=true")
    assert parsed["line_items"]["0"]["price_data"]["currency"] == "eur"
    assert parsed["metadata"] == {"0": "zero"} and as_list(parsed["expand"], "expand") == ["a", "b"]
    with pytest.raises(FormError) as info:
        parse_brackets("a=1&a[b]=2")
    assert info.value.param == "a"
    with pytest.raises(FormError):
        as_list({"0": "x", "2": "y"}, "items")
