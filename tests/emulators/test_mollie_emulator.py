"""The Mollie emulator, driven by the real, unmodified mollie-api-python SDK over loopback.

Webhooks go over real HTTP to a tiny receiver served with ThreadedServer; retry schedules run on a compressed clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mollie.api.client import Client
from mollie.api.error import NotFoundError, UnauthorizedError, UnprocessableEntityError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from quittance_emulators.mollie import RETRY_MINUTES, MollieEmulator
from quittance_emulators.server import ThreadedServer

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")  # requests (the SDK) honours *_PROXY

FAST = 3_600_000.0  # 26 h of Mollie time in 26 ms


class Receiver:
    """The merchant side: a webhook endpoint answering scripted statuses (then 200) and the shop's return pages."""

    def __init__(self, statuses: list[int] | None = None, delays: list[float] | None = None) -> None:
        self.statuses, self.delays = list(statuses or []), list(delays or [])
        self.calls: list[dict[str, str]] = []
        self.visits: list[str] = []
        self.url = ""  # set once served
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"]), Route("/elsewhere", self.back),
                                     Route("/return", self.back), Route("/canceled", self.back)])

    async def hook(self, request: Request) -> Response:
        self.calls.append({"body": (await request.body()).decode(), "content_type": request.headers["content-type"]})
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        status = self.statuses.pop(0) if self.statuses else 200
        return PlainTextResponse("ok", status, headers={"Location": "/elsewhere"} if 300 <= status < 400 else None)

    async def back(self, request: Request) -> Response:
        self.visits.append(str(request.url))
        return PlainTextResponse("back in the shop")


@pytest.fixture
def emulator() -> Iterator[MollieEmulator]:
    with MollieEmulator(clock_scale=FAST) as emu:
        yield emu


@pytest.fixture
def web() -> Iterator[httpx.Client]:
    """A browser (and a curl for the control endpoints): one client, so no TLS context per request."""
    with httpx.Client(trust_env=False) as client:
        yield client


@pytest.fixture
def shop() -> Iterator[Receiver]:
    receiver = Receiver()
    with ThreadedServer(receiver.app) as server:
        receiver.url = server.base_url
        yield receiver


def sdk(emu: MollieEmulator, key: str = "test_abcdef") -> Client:
    client = Client(api_endpoint=emu.base_url)
    client.set_api_key(key)
    return client


def body(shop_url: str = "http://shop.test", **overrides: Any) -> dict[str, Any]:
    data = {"amount": {"currency": "EUR", "value": "10.00"}, "description": "Invoice 2026-0042",
            "redirectUrl": f"{shop_url}/return?attempt=7", "metadata": {"attempt": 7, "invoices": [42]}}
    return {**data, **overrides}


def choose(web: httpx.Client, checkout_url: str, status: str, **extra: str) -> httpx.Response:
    """Press the page's button for `status`, as a browser would (form action and button read from the HTML)."""
    page = web.get(checkout_url)
    action = re.search(r'<form method="post" action="([^"]+)">', page.text)
    assert action and f'name="status" value="{status}"' in page.text
    return web.post(httpx.URL(checkout_url).join(action.group(1)), data={"status": status, **extra})


def test_create_read_and_pay_on_hosted_page(emulator: MollieEmulator, shop: Receiver, web: httpx.Client) -> None:
    client = sdk(emulator)
    created = client.payments.create(body(shop.url, locale="nl_BE"))
    assert re.fullmatch(r"tr_[A-Za-z0-9]{10}", created.id)
    assert created.is_open() and created.is_cancelable and created.mode == "test" and not created.is_paid()
    assert created.checkout_url == f"{emulator.base_url}/checkout/{created.id}"
    assert created.metadata == {"attempt": 7, "invoices": [42]} and created.locale == "nl_BE"
    expires = dt.datetime.fromisoformat(created.expires_at) - dt.datetime.fromisoformat(created.created_at)
    assert expires == dt.timedelta(minutes=15)
    assert created["_links"]["changePaymentState"]["href"].endswith(created.id)
    assert "amountRefunded" not in created and not created.has_refunds()

    read = client.payments.get(created.id)
    assert read.is_open() and read.amount == {"value": "10.00", "currency": "EUR"} and read.method is None

    final = web.post(created.checkout_url, data={"status": "paid", "method": "bancontact"}, follow_redirects=True)
    assert final.status_code == 200 and str(final.url) == created.redirect_url
    assert shop.visits == [created.redirect_url]

    paid = client.payments.get(created.id)
    assert paid.is_paid() and paid.status == "paid" and paid.paid_at and paid.method == "bancontact"
    assert paid.checkout_url is None and paid.is_cancelable is False
    assert paid.amount_refunded == {"value": "0.00", "currency": "EUR"}
    assert paid.amount_remaining == {"value": "10.00", "currency": "EUR"}
    assert "amountChargedBack" not in paid and emulator.payment(created.id) == dict(paid)


def test_hosted_page_is_labelled_accessible_with_every_outcome(emulator: MollieEmulator, web: httpx.Client) -> None:
    payment = sdk(emulator).payments.create(body(method=["ideal", "bancontact"]))
    assert payment.method is None
    page = web.get(payment.checkout_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "TEST MODE — Mollie emulator" in page.text and '<html lang="en">' in page.text
    for status in ("paid", "failed", "canceled", "expired", "pending", "authorized"):
        assert re.search(rf'<button type="submit" name="status" value="{status}"[^>]*>\w+</button>', page.text)
    radios = re.findall(r'<input type="radio" id="([\w-]+)" name="method" value="(\w+)"', page.text)
    assert [value for _, value in radios] == ["ideal", "bancontact"]
    assert all(f'<label for="{ident}">' in page.text for ident, _ in radios)

    missing = web.get(f"{emulator.base_url}/checkout/tr_unknown123")
    assert missing.status_code == 404 and "TEST MODE — Mollie emulator" in missing.text


def test_pending_then_complete_and_final_pages(emulator: MollieEmulator, shop: Receiver, web: httpx.Client) -> None:
    client = sdk(emulator)
    payment = client.payments.create(body(shop.url, method="creditcard", webhookUrl=f"{shop.url}/hook"))
    pending = choose(web, payment.checkout_url, "pending")
    assert pending.status_code == 303 and pending.headers["location"] == f"/checkout/{payment.id}"
    assert client.payments.get(payment.id).is_pending()
    page = web.get(payment.checkout_url)
    assert "Complete payment" in page.text and "TEST MODE — Mollie emulator" in page.text
    assert f'href="{payment.redirect_url}"' in page.text

    done = choose(web, payment.checkout_url, "paid")
    assert done.status_code == 303 and done.headers["location"] == payment.redirect_url
    emulator.wait_for_deliveries(1)
    time.sleep(0.05)
    assert [call["body"] for call in shop.calls] == [f"id={payment.id}"]  # none for pending
    assert client.payments.get(payment.id).method == "creditcard"

    again = web.post(payment.checkout_url, data={"status": "failed"})
    assert again.status_code == 409 and "TEST MODE — Mollie emulator" in again.text
    assert client.payments.get(payment.id).is_paid()


def test_cancel_on_the_page_returns_to_cancel_url(emulator: MollieEmulator, web: httpx.Client) -> None:
    client = sdk(emulator)
    payment = client.payments.create(body(cancelUrl="http://shop.test/canceled"))
    reply = choose(web, payment.checkout_url, "canceled", method="ideal")
    assert reply.status_code == 303 and reply.headers["location"] == "http://shop.test/canceled"
    canceled = client.payments.get(payment.id)
    assert canceled.is_canceled() and canceled.canceled_at and not canceled.is_paid() and canceled.checkout_url is None


@pytest.mark.parametrize(("status", "stamp"), [("failed", "failedAt"), ("expired", "expiredAt"),
                                               ("authorized", "authorizedAt")])
def test_other_outcomes_set_their_timestamp(emulator: MollieEmulator, web: httpx.Client, status: str,
                                            stamp: str) -> None:
    client = sdk(emulator)
    payment = client.payments.create(body())
    assert choose(web, payment.checkout_url, status).headers["location"] == payment.redirect_url
    after = client.payments.get(payment.id)
    assert after.status == status and after[stamp] and after.paid_at is None and after.checkout_url is None


def test_refunds_with_the_sdk(emulator: MollieEmulator) -> None:
    client = sdk(emulator)
    payment = client.payments.create(body())
    with pytest.raises(UnprocessableEntityError):
        payment.refunds.create({"amount": {"currency": "EUR", "value": "1.00"}})
    emulator.set_status(payment.id, "paid")
    payment = client.payments.get(payment.id)

    refund = payment.refunds.create({"amount": {"currency": "EUR", "value": "4.00"}, "description": "goodwill"})
    assert re.fullmatch(r"re_[A-Za-z0-9]{10}", refund.id) and refund.is_processing()
    assert refund.payment_id == payment.id and refund.amount == {"value": "4.00", "currency": "EUR"}
    after = client.payments.get(payment.id)
    assert after.status == "paid" and after.is_paid() and after.has_refunds()
    assert after.amount_refunded == {"value": "4.00", "currency": "EUR"}
    assert after.amount_remaining == {"value": "6.00", "currency": "EUR"}
    listed = after.refunds.list()
    assert listed.count == 1 and next(iter(listed)).id == refund.id
    assert after.refunds.get(refund.id).description == "goodwill"

    with pytest.raises(UnprocessableEntityError) as too_much:
        after.refunds.create({"amount": {"currency": "EUR", "value": "6.01"}})
    assert too_much.value.field == "amount.value"
    emulator.settle_refund(refund.id)
    assert client.payments.get(payment.id).refunds.get(refund.id).is_refunded()
    rest = emulator.refund(payment.id)
    full = emulator.payment(payment.id)
    assert rest.startswith("re_") and full["amountRefunded"] == full["amount"]
    assert full["amountRemaining"]["value"] == "0.00" and full["status"] == "paid"


def test_chargeback_reversal_and_embed(emulator: MollieEmulator) -> None:
    client = sdk(emulator)
    payment = client.payments.create(body())
    emulator.set_status(payment.id, "paid", method="paypal")
    chargeback = emulator.chargeback(payment.id)
    charged = client.payments.get(payment.id, embed="refunds,chargebacks")  # sent as embed=refunds%2Cchargebacks
    assert charged.status == "paid" and charged.method == "paypal" and charged.has_chargebacks()
    assert charged.amount_chargedback == {"value": "10.00", "currency": "EUR"}
    assert [c["id"] for c in charged["_embedded"]["chargebacks"]] == [chargeback]
    assert "refunds" not in charged["_embedded"] and not charged.has_refunds()
    item = charged.chargebacks.get(chargeback)
    assert item.settlement_amount == {"value": "-10.00", "currency": "EUR"} and item.reversed_at is None

    emulator.reverse_chargeback(chargeback)
    reversed_ = client.payments.get(payment.id)
    assert "amountChargedBack" not in reversed_ and reversed_.has_chargebacks()
    assert reversed_.chargebacks.list()[0].reversed_at


def test_idempotent_replay_and_conflict(emulator: MollieEmulator, web: httpx.Client) -> None:
    client = sdk(emulator)
    first = client.payments.create(body(), idempotency_key="mollie-attempt-7")
    second = client.payments.create(body(), idempotency_key="mollie-attempt-7")
    assert second.id == first.id and dict(second) == dict(first)
    raw = web.post(f"{emulator.base_url}/v2/payments", json=body(),
                     headers={"Authorization": "Bearer test_abcdef", "Idempotency-Key": "mollie-attempt-7"})
    assert raw.status_code == 201 and raw.headers["Idempotent-Replayed"] == "true" and raw.json()["id"] == first.id
    assert raw.headers["content-type"] == "application/hal+json"
    with pytest.raises(UnprocessableEntityError):
        client.payments.create(body(description="another"), idempotency_key="mollie-attempt-7")
    other = client.payments.create(body(), idempotency_key="mollie-attempt-8")
    assert other.id != first.id


def test_bad_key_is_401(emulator: MollieEmulator, web: httpx.Client) -> None:
    strict = MollieEmulator({"test_demo"})
    with strict:
        with pytest.raises(UnauthorizedError) as denied:
            sdk(strict, "test_abcdef").payments.create(body())
        assert denied.value.status == 401 and str(denied.value) == "Missing authentication, or failed to authenticate"
        assert sdk(strict, "test_demo").payments.create(body()).is_open()
    reply = web.post(f"{emulator.base_url}/v2/payments", json=body(), headers={"Authorization": "Bearer live_x"})
    assert reply.status_code == 401 and reply.json()["title"] == "Unauthorized Request"
    assert web.get(f"{emulator.base_url}/v2/payments/tr_abcdefghij").json()["status"] == 401


def test_payments_are_scoped_to_the_key_that_made_them() -> None:
    with MollieEmulator({"test_one", "test_two"}) as emu:
        mine = sdk(emu, "test_one").payments.create(body())
        with pytest.raises(NotFoundError):
            sdk(emu, "test_two").payments.get(mine.id)


@pytest.mark.parametrize(("changes", "field"), [
    ({"amount": {"currency": "EUR", "value": "16.1"}}, "amount.value"),
    ({"amount": {"currency": "EUR", "value": 16.10}}, "amount.value"),
    ({"amount": {"currency": "JPY", "value": "1600.00"}}, "amount.value"),
    ({"amount": {"currency": "EUR", "value": "0.00"}}, "amount.value"),
    ({"amount": {"currency": "ABC", "value": "1.00"}}, "amount.currency"),
    ({"amount": None}, "amount"),
    ({"description": ""}, "description"),
    ({"redirectUrl": None}, "redirectUrl"),
    ({"webhookUrl": "not a url"}, "webhookUrl"),
    ({"method": "sofort"}, "method"),
    ({"method": ["ideal", "giropay"]}, "method"),
    ({"locale": "xx_XX"}, "locale"),
    ({"metadata": {"blob": "x" * 2000}}, "metadata"),
])
def test_invalid_payments_are_422(emulator: MollieEmulator, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(UnprocessableEntityError) as refused:
        sdk(emulator).payments.create(body(**changes))
    assert refused.value.status == 422 and refused.value.field == field


def test_valid_variants(emulator: MollieEmulator) -> None:
    client = sdk(emulator)
    yen = client.payments.create(body(amount={"currency": "JPY", "value": "1600"}))
    assert yen.amount == {"value": "1600", "currency": "JPY"}
    long = client.payments.create(body(description="x" * 300, method="banktransfer"))
    assert long.description == "x" * 255 and long.method == "banktransfer"
    lifetime = dt.datetime.fromisoformat(long.expires_at) - dt.datetime.fromisoformat(long.created_at)
    assert lifetime == dt.timedelta(days=12)


def test_unknown_id_is_404(emulator: MollieEmulator, web: httpx.Client) -> None:
    with pytest.raises(NotFoundError) as missing:
        sdk(emulator).payments.get("tr_unknown123")
    assert str(missing.value) == "No payment exists with token tr_unknown123."
    nowhere = web.get(f"{emulator.base_url}/v2/nowhere")
    assert nowhere.status_code == 404 and nowhere.json()["status"] == 404 and nowhere.json()["detail"]


def test_cancel_with_delete(emulator: MollieEmulator) -> None:
    client = sdk(emulator)
    payment = client.payments.create(body())
    canceled = client.payments.delete(payment.id)
    assert canceled.is_canceled() and canceled.canceled_at and canceled.is_cancelable is False
    assert canceled.checkout_url is None and client.payments.get(payment.id).is_canceled()
    with pytest.raises(UnprocessableEntityError):
        client.payments.delete(payment.id)


def test_webhook_is_delivered_to_a_real_receiver(emulator: MollieEmulator, shop: Receiver, web: httpx.Client) -> None:
    payment = sdk(emulator).payments.create(body(shop.url, webhookUrl=f"{shop.url}/hook"))
    choose(web, payment.checkout_url, "paid")
    emulator.wait_for_deliveries(1)
    assert shop.calls == [{"body": f"id={payment.id}", "content_type": "application/x-www-form-urlencoded"}]
    delivery = emulator.deliveries[0]
    assert delivery["payment_id"] == payment.id and delivery["url"] == f"{shop.url}/hook"
    assert delivery["status"] == 200 and delivery["error"] is None and delivery["attempt"] == 1

    emulator.send_webhook(payment.id)
    emulator.wait_for_deliveries(2)
    assert shop.calls[1]["body"] == f"id={payment.id}"


def test_retries_until_a_2xx() -> None:
    shop = Receiver(statuses=[500, 500, 200])
    with ThreadedServer(shop.app) as server, MollieEmulator(clock_scale=FAST) as emu:
        payment = sdk(emu).payments.create(body(webhookUrl=f"{server.base_url}/hook"))
        emu.set_status(payment.id, "paid")
        emu.wait_for_deliveries(3)
        time.sleep(0.1)  # the rest of the compressed schedule (26 ms) has passed
        assert [(d["attempt"], d["status"]) for d in emu.deliveries] == [(1, 500), (2, 500), (3, 200)]
        assert len(shop.calls) == 3


def test_ten_attempts_on_the_schedule_and_redirects_are_failures() -> None:
    shop = Receiver(statuses=[302] * 20)
    scale = 360_000.0  # 26 h in 0.26 s
    with ThreadedServer(shop.app) as server, MollieEmulator(clock_scale=scale) as emu:
        payment = sdk(emu).payments.create(body(webhookUrl=f"{server.base_url}/hook"))
        changed = time.time()
        emu.set_status(payment.id, "failed")
        emu.wait_for_deliveries(10)
        time.sleep(0.1)
        assert [d["attempt"] for d in emu.deliveries] == list(range(1, 11))
        assert {d["status"] for d in emu.deliveries} == {302}
        assert shop.visits == []  # the redirect was not followed
        offsets = [d["at"] - changed for d in emu.deliveries]
        for offset, minutes in zip(offsets, RETRY_MINUTES, strict=True):
            assert minutes * 60 / scale <= offset + 0.005 < minutes * 60 / scale + 0.15


def test_a_slow_answer_is_a_failure() -> None:
    shop = Receiver(delays=[0.6])
    with ThreadedServer(shop.app) as server, MollieEmulator(clock_scale=FAST, webhook_timeout=0.2) as emu:
        payment = sdk(emu).payments.create(body(webhookUrl=f"{server.base_url}/hook"))
        emu.set_status(payment.id, "expired")
        emu.wait_for_deliveries(2)
        first, second = emu.deliveries[:2]
        assert first["status"] is None and "Timeout" in first["error"] and second["status"] == 200


def test_held_webhooks_arrive_after_the_redirect(emulator: MollieEmulator, shop: Receiver, web: httpx.Client) -> None:
    payment = sdk(emulator).payments.create(body(shop.url, webhookUrl=f"{shop.url}/hook"))
    emulator.hold_webhooks(True)
    back = web.post(payment.checkout_url, data={"status": "paid"}, follow_redirects=True)
    assert str(back.url) == payment.redirect_url
    time.sleep(0.1)
    assert emulator.deliveries == [] and shop.calls == []
    emulator.hold_webhooks(False)
    emulator.wait_for_deliveries(1)
    assert shop.calls[0]["body"] == f"id={payment.id}"


def test_open_payments_expire_at_expires_at(emulator: MollieEmulator, shop: Receiver) -> None:
    client = sdk(emulator)
    payment = client.payments.create(body(shop.url, webhookUrl=f"{shop.url}/hook"))
    emulator._now = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)
    expired = client.payments.get(payment.id)
    assert expired.is_expired() and expired.expired_at == expired.expires_at and expired.checkout_url is None
    emulator.wait_for_deliveries(1)
    assert shop.calls[0]["body"] == f"id={payment.id}"


def test_control_endpoints_over_http(emulator: MollieEmulator, web: httpx.Client) -> None:
    payment = sdk(emulator).payments.create(body(webhookUrl="http://127.0.0.1:9/hook"))
    control = f"{emulator.base_url}/_control"
    assert web.post(f"{control}/webhooks/hold", json={"hold": True}).json() == {"ok": True}
    assert web.post(f"{control}/payments/{payment.id}/status", json={"status": "paid", "method": "kbc"}).is_success
    state = web.get(f"{control}/payments/{payment.id}").json()
    assert state["status"] == "paid" and state["method"] == "kbc" and state["paidAt"]
    refund = web.post(f"{control}/payments/{payment.id}/refunds", data={"amount": "2.50"}).json()["id"]
    assert refund.startswith("re_")
    assert web.post(f"{control}/refunds/{refund}/status", json={"status": "refunded"}).is_success
    chargeback = web.post(f"{control}/payments/{payment.id}/chargebacks", json={"amount": "7.50"}).json()["id"]
    assert emulator.payment(payment.id)["amountChargedBack"]["value"] == "7.50"
    assert web.post(f"{control}/chargebacks/{chargeback}/reverse").is_success
    assert "amountChargedBack" not in emulator.payment(payment.id)
    assert web.post(f"{control}/payments/{payment.id}/webhook").is_success
    assert emulator.deliveries == []  # all held: paid, refund, settle, chargeback, reversal, resend

    refused = web.post(f"{control}/payments/{payment.id}/status", json={"status": "open"})
    assert refused.status_code == 422 and refused.json()["field"] == "status"
    assert web.get(f"{control}/payments/tr_unknown123").status_code == 404
    assert web.get(f"{control}/deliveries").json() == {"deliveries": []}
