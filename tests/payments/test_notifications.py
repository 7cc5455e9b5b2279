"""Notifications that must credit nothing, or credit once: forged, stale, not ours,
a different amount, duplicated, racing, dropped, and late for a closed order."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from payments import ledger
from payments.channel_log import NotificationRecord
from payments.remote_top_up import resolve_stale_top_ups
from payments.topups import TopUpState, find_top_up, finish_unpaid
from sandbox.alipay import signing as alipay_signing
from sandbox.wechat import protocol
from tests.live import in_app

DESKTOP = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"}
SHANGHAI = ZoneInfo("Asia/Shanghai")


def open_top_up_over_http(live_app, browser, card, amount="50") -> dict:
    """A native WeChat top-up opened through the API, as the card page does."""
    created = browser.post(
        f"{live_app.url}/api/top-ups",
        json={
            "amount": amount,
            "channel": "wechat",
            "payer_kind": "native",
            "card": card.number,
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return created.json()


def payer_pays(live_app, browser, qr_content: str) -> None:
    """The sandbox's payer scans the top-up's code and confirms."""
    cashier = browser.post(
        f"{live_app.url}/sandbox/scan", data={"code_url": qr_content}
    )
    confirmed = browser.post(cashier.url, data={"payer": "demo-1", "action": "confirm"})
    assert confirmed.status_code == 200


def _open_and_pay(live_app, browser, card, amount="50", pay=True) -> str:
    created = open_top_up_over_http(live_app, browser, card, amount)
    if pay:
        payer_pays(live_app, browser, created["qr_content"])
    return created["out_trade_no"]


def _records(session, number: str) -> list[str]:
    session.rollback()
    return [
        record.outcome
        for record in session.scalars(
            select(NotificationRecord)
            .where(NotificationRecord.out_trade_no == number)
            .order_by(NotificationRecord.id)
        )
    ]


def _last_record(session, number: str) -> NotificationRecord:
    session.rollback()
    return session.scalars(
        select(NotificationRecord)
        .where(NotificationRecord.out_trade_no == number)
        .order_by(NotificationRecord.id.desc())
    ).first()


def _logged(caplog, event: str, number: str) -> bool:
    """Whether ``event`` was logged with ``number`` as its order id."""
    return any(
        record.getMessage() == event and getattr(record, "out_trade_no", None) == number
        for record in caplog.records
    )


def _balance(session, card) -> int:
    session.rollback()
    return card.wallet.balance_fen


def _state(session, number: str) -> TopUpState:
    session.rollback()
    return find_top_up(session, number).state


def test_a_wrongly_signed_notification_credits_nothing(
    live_app, student_browser, session
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    live_app.sandbox.faults.set("wechat", "notification", "bad_signature")

    number = _open_and_pay(live_app, browser, card)
    accepted = live_app.sandbox.outbox.deliver_due()

    assert accepted == 0  # we answered with an error status
    assert _balance(session, card) == 1000
    assert _state(session, number) is TopUpState.PAYING
    assert _records(session, number) in ([], ["refused"])  # no id before verifying
    refused = session.scalars(
        select(NotificationRecord).where(NotificationRecord.outcome == "refused")
    ).all()
    assert refused and "BadNotificationSignature" in refused[-1].reason


def _signed_post(live_app, resource: dict, stamp: int) -> requests.Response:
    gateway = live_app.sandbox.gateways["wechat"]
    key, serial = gateway._mode_signer()
    plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
    event = {
        "id": str(uuid.uuid4()),
        "create_time": dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat(),
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": protocol.seal(gateway.keys.apiv3_key, plaintext, "transaction")
        | {"original_type": "transaction"},
    }
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    headers = {
        "Content-Type": "application/json",
        **protocol.signed_headers(key, serial, body, stamp),
    }
    return requests.post(
        f"{live_app.url}/notify/wechat", data=body.encode(), headers=headers, timeout=10
    )


def _resource(live_app, number: str, amount_fen: int, mchid: str | None = None) -> dict:
    gateway = live_app.sandbox.gateways["wechat"]
    return {
        "mchid": mchid or gateway.keys.mchid,
        "appid": gateway.keys.appid,
        "out_trade_no": number,
        "transaction_id": "4200009999" + number[-8:],
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": dt.datetime.now(dt.UTC).isoformat(),
        "payer": {"openid": "o-demo"},
        "amount": {
            "total": amount_fen,
            "payer_total": amount_fen,
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }


def test_a_stale_notification_credits_nothing(
    live_app, student_browser, session, caplog
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = _open_and_pay(live_app, browser, card, pay=False)
    ten_minutes_ago = int(dt.datetime.now(dt.UTC).timestamp()) - 600
    caplog.set_level(logging.INFO)

    answer = _signed_post(live_app, _resource(live_app, number, 5000), ten_minutes_ago)

    assert answer.status_code >= 400
    assert _balance(session, card) == 1000
    assert _state(session, number) is TopUpState.PAYING
    # Verified and decrypted before it was found stale: the refusal names the order.
    assert _records(session, number) == ["refused"]
    assert "StaleNotification" in _last_record(session, number).reason
    assert _logged(caplog, "wechat_notification_stale", number)
    assert _logged(caplog, "notification_refused", number)


def test_a_notification_for_another_merchant_credits_nothing(
    live_app, student_browser, session
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = _open_and_pay(live_app, browser, card, pay=False)
    now = int(dt.datetime.now(dt.UTC).timestamp())

    answer = _signed_post(
        live_app, _resource(live_app, number, 5000, mchid="1900000999"), now
    )

    assert answer.status_code >= 400
    assert _balance(session, card) == 1000
    assert _records(session, number) == ["refused"]


def test_a_correctly_signed_notification_is_accepted(
    live_app, student_browser, session
):
    """The same hand-made notification as above, addressed to us: the refusals
    above are about what they changed, not about how they were made."""
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = _open_and_pay(live_app, browser, card, pay=False)
    now = int(dt.datetime.now(dt.UTC).timestamp())

    answer = _signed_post(live_app, _resource(live_app, number, 5000), now)

    assert answer.status_code == 204
    assert _balance(session, card) == 6000


def test_a_notification_with_a_different_amount_is_flagged(
    live_app, student_browser, session
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    live_app.sandbox.faults.set("wechat", "notification", "amount")

    number = _open_and_pay(live_app, browser, card)
    live_app.sandbox.outbox.deliver_due()

    assert _balance(session, card) == 1000
    top_up = find_top_up(session, number)
    assert top_up.needs_review and "5001" in top_up.review_reason
    assert _records(session, number) == ["flagged"]


def test_a_duplicated_notification_credits_once(live_app, student_browser, session):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    live_app.sandbox.faults.set("wechat", "notification", "duplicate")

    number = _open_and_pay(live_app, browser, card)
    accepted = live_app.sandbox.outbox.deliver_due()

    assert accepted == 2  # both acknowledged, so WeChat stops sending
    assert _balance(session, card) == 6000
    assert _records(session, number) == ["accepted", "duplicate"]
    assert ledger.check_ledger(session) == []


def test_a_dropped_notification_is_settled_by_the_query_job(
    live_app, student_browser, session
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    number = _open_and_pay(live_app, browser, card)

    now = dt.datetime.now(dt.UTC)
    early = in_app(live_app, lambda: resolve_stale_top_ups(now=now))
    late = in_app(
        live_app, lambda: resolve_stale_top_ups(now=now + dt.timedelta(minutes=3))
    )

    assert live_app.sandbox.outbox.deliver_due() == 0
    assert early.settled == 0 and late.settled == 1
    assert _state(session, number) is TopUpState.SUCCEEDED
    assert _balance(session, card) == 6000


def test_an_abandoned_order_is_closed_at_the_channel_then_here(
    live_app, student_browser, session
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    created = browser.post(
        f"{live_app.url}/api/top-ups",
        json={
            "amount": "50",
            "channel": "wechat",
            "payer_kind": "native",
            "card": card.number,
        },
    ).json()

    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    report = in_app(live_app, lambda: resolve_stale_top_ups(now=later))
    cashier = browser.post(
        f"{live_app.url}/sandbox/scan", data={"code_url": created["qr_content"]}
    )
    too_late = browser.post(cashier.url, data={"payer": "demo-1", "action": "confirm"})

    assert report.closed == 1
    assert _state(session, created["out_trade_no"]) is TopUpState.CLOSED
    assert "关闭" in too_late.text or "closed" in too_late.text.lower()
    assert live_app.sandbox.outbox.deliver_due() == 0
    assert _balance(session, card) == 1000


def test_a_payment_for_an_order_we_closed_is_flagged_not_credited(
    live_app, student_browser, session
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = _open_and_pay(live_app, browser, card, pay=False)
    # Closed here, but the close never reached the channel (a crash in between).
    session.rollback()
    finish_unpaid(session, number, TopUpState.CLOSED, "expired")
    session.commit()
    qr = browser.get(f"{live_app.url}/api/top-ups/{number}").json()["qr_content"]
    cashier = browser.post(f"{live_app.url}/sandbox/scan", data={"code_url": qr})
    browser.post(cashier.url, data={"payer": "demo-1", "action": "confirm"})

    live_app.sandbox.outbox.deliver_due()

    top_up = find_top_up(session, number)
    assert top_up.state is TopUpState.CLOSED
    assert top_up.needs_review and "closed" in top_up.review_reason
    assert _balance(session, card) == 1000


@pytest.mark.postgres
def test_ten_copies_of_one_notification_racing_credit_once(
    live_app, student_browser, session
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    live_app.sandbox.faults.set("wechat", "notification", "delay")
    live_app.sandbox.faults.set("wechat", "notification_delay_seconds", 3600)
    number = _open_and_pay(live_app, browser, card)
    delivery = live_app.sandbox.outbox.pending("wechat")[-1]
    headers = dict(delivery.headers.items())
    barrier = threading.Barrier(10)

    def post(_):
        barrier.wait()
        return requests.post(
            delivery.url, data=delivery.body, headers=headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(post, range(10)))

    assert all(200 <= status < 300 for status in statuses)
    assert _balance(session, card) == 6000
    outcomes = _records(session, number)
    assert outcomes.count("accepted") == 1
    assert outcomes.count("duplicate") == 9
    assert ledger.check_ledger(session) == []


# -- Alipay: the same refusals through /notify/alipay ---------------------------


def _open_alipay(live_app, browser, card, amount="50") -> str:
    created = browser.post(
        f"{live_app.url}/api/top-ups",
        json={
            "amount": amount,
            "channel": "alipay",
            "payer_kind": "precreate",
            "card": card.number,
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return created.json()["out_trade_no"]


def _alipay_post(
    live_app, number: str, *, key=None, **changes: str
) -> requests.Response:
    """A paid notification as the sandbox's Alipay sends it (form-encoded, RSA2 over
    the sorted parameters), with ``changes`` made before signing, signed by
    Alipay's key unless ``key`` says otherwise."""
    gateway = live_app.sandbox.gateways["alipay"]
    now = live_app.sandbox.clock.now()
    stamp = now.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    params = {
        "notify_type": "trade_status_sync",
        "notify_id": uuid.uuid4().hex,
        "app_id": gateway.keys.app_id,
        "auth_app_id": gateway.keys.app_id,
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
        "trade_no": "2026" + uuid.uuid4().hex[:24],
        "out_trade_no": number,
        "buyer_id": "2088102177846880",
        "seller_id": gateway.keys.seller_id,
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "50.00",
        "receipt_amount": "50.00",
        "subject": "校园卡充值",
        "gmt_create": stamp,
        "gmt_payment": stamp,
        "notify_time": stamp,
    } | changes
    params["sign"] = alipay_signing.sign(
        key or gateway._alipay_private, alipay_signing.notification_content(params)
    )
    return requests.post(
        f"{live_app.url}/notify/alipay",
        data=urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        timeout=10,
    )


def test_a_correctly_signed_alipay_notification_is_accepted(
    live_app, student_browser, session
):
    """The hand-made notification of the refusals below, unchanged: it credits."""
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = _open_alipay(live_app, browser, card)

    answer = _alipay_post(live_app, number)

    assert (answer.status_code, answer.text) == (200, "success")
    assert _balance(session, card) == 6000
    assert _records(session, number) == ["accepted"]


@pytest.mark.parametrize(
    ("forgery", "refusal"),
    [
        pytest.param(
            {"key": "stranger"}, "BadNotificationSignature", id="forged-signature"
        ),
        pytest.param({"app_id": "2021000000000999"}, "NotForUs", id="another-app-id"),
        pytest.param(
            {"seller_id": "2088000000000999"}, "NotForUs", id="another-seller-id"
        ),
    ],
)
def test_an_alipay_notification_we_must_not_trust_credits_nothing(
    live_app, student_browser, session, caplog, forgery, refusal
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = _open_alipay(live_app, browser, card)
    if forgery.get("key") == "stranger":
        forgery = {
            "key": rsa.generate_private_key(public_exponent=65537, key_size=2048)
        }
    caplog.set_level(logging.INFO)

    answer = _alipay_post(live_app, number, **forgery)

    # Anything but "success" makes Alipay send it again; the real one, if there
    # is one, then still arrives.
    assert answer.text != "success"
    assert _balance(session, card) == 1000
    assert _state(session, number) is TopUpState.PAYING
    assert _records(session, number) == ["refused"]
    assert _last_record(session, number).reason.startswith(refusal)
    assert _logged(caplog, "notification_refused", number)


def test_an_alipay_notification_with_a_different_amount_is_flagged(
    live_app, student_browser, session, caplog
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = _open_alipay(live_app, browser, card)
    caplog.set_level(logging.INFO)

    answer = _alipay_post(
        live_app, number, total_amount="50.01", receipt_amount="50.01"
    )

    # Genuine, so acknowledged (Alipay would otherwise resend it for a day), but
    # not credited: the order waits for finance with the reason.
    assert (answer.status_code, answer.text) == (200, "success")
    assert _balance(session, card) == 1000
    top_up = find_top_up(session, number)
    assert top_up.state is TopUpState.PAYING
    assert top_up.needs_review and "5001" in top_up.review_reason
    assert _records(session, number) == ["flagged"]
    assert _logged(caplog, "top_up_flagged", number)
