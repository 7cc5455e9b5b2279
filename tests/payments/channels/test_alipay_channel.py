"""The Alipay adapter against the sandbox gateway on a loopback server, through
python-alipay-sdk: every method, and each gap of the SDK that the adapter closes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from alipay import AliPay
from sqlalchemy.orm import Session

from campus.settings import Settings
from payments.channels.alipay import AlipayChannel, AlipayConfig
from payments.channels.alipay.channel import SHANGHAI, AlipayRejected
from payments.channels.base import (
    BadNotificationSignature,
    DuplicateNotification,
    NotificationKind,
    OrderRequest,
    PayerContext,
    PayerKind,
    RefundRequest,
    RefundState,
    StaleNotification,
    TradeState,
)
from payments.channels.received import remember_accepted
from reconciliation.bills.alipay import parse_alipay_bill
from sandbox.alipay import testing
from sandbox.alipay.testing import RunningAlipay

alipay_keys = testing.alipay_keys
alipay_sandbox = testing.alipay_sandbox
_alipay_servers = testing._alipay_servers


@pytest.fixture
def channel(alipay_sandbox: RunningAlipay, session: Session) -> AlipayChannel:
    settings = Settings(
        instance_path=alipay_sandbox.sandbox.instance_path,
        base_url=alipay_sandbox.base_url,
    )
    config = AlipayConfig.from_settings(settings, environ={})
    return AlipayChannel(
        config, clock=alipay_sandbox.sandbox.clock.now, session_factory=lambda: session
    )


def order(alipay: RunningAlipay, amount_fen: int = 1250, **options) -> OrderRequest:
    return OrderRequest(
        out_trade_no=f"T{uuid.uuid4().hex[:20]}",
        amount_fen=amount_fen,
        description="一食堂 午餐 Canteen lunch",
        notify_url=alipay.notify_url,
        **options,
    )


def delivered(alipay: RunningAlipay) -> list[bytes]:
    alipay.sandbox.outbox.deliver_due()
    return alipay.receiver.received


# -- code payments ----------


def test_code_payment_succeeds_and_query_agrees(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    before = alipay_sandbox.gateway.payers()[0]["balance_fen"]

    paid = channel.pay_with_code(request, alipay_sandbox.payer_code())
    queried = channel.query(request.out_trade_no)

    assert paid.state == TradeState.SUCCEEDED
    assert paid.amount_fen == 1250
    assert paid.transaction_id and len(paid.transaction_id) == 28
    assert paid.paid_at is not None and paid.paid_at.utcoffset() == dt.timedelta(
        hours=8
    )
    assert queried.state == TradeState.SUCCEEDED
    assert queried.transaction_id == paid.transaction_id
    user_id = alipay_sandbox.gateway.payers()[0]["user_id"]
    assert queried.payer_id == paid.payer_id == user_id
    assert alipay_sandbox.gateway.payers()[0]["balance_fen"] == before - 1250


def test_password_needed_answers_paying_until_the_payer_confirms(
    channel, alipay_sandbox
):
    payer = alipay_sandbox.gateway.payers()[1]["id"]
    alipay_sandbox.gateway.set_password_needed(payer, 30)
    request = order(alipay_sandbox)

    first = channel.pay_with_code(request, alipay_sandbox.gateway.current_code(payer))
    still = channel.query(request.out_trade_no)
    alipay_sandbox.sandbox.clock.advance(31)
    after = channel.query(request.out_trade_no)

    assert first.state == TradeState.PAYING
    assert first.raw["code"] == "10003"
    assert still.state == TradeState.PAYING
    assert after.state == TradeState.SUCCEEDED
    # The switch is used up: the next payment goes straight through.
    assert (
        channel.pay_with_code(
            order(alipay_sandbox), alipay_sandbox.gateway.current_code(payer)
        ).state
        == TradeState.SUCCEEDED
    )


def test_a_used_code_is_rejected_with_its_sub_code(channel, alipay_sandbox):
    code = alipay_sandbox.payer_code()
    channel.pay_with_code(order(alipay_sandbox), code)

    with pytest.raises(AlipayRejected) as refused:
        channel.pay_with_code(order(alipay_sandbox), code)

    assert refused.value.code == "40004"
    assert refused.value.sub_code == "ACQ.PAYMENT_AUTH_CODE_INVALID"


def test_insufficient_balance_is_rejected(channel, alipay_sandbox):
    poor = alipay_sandbox.gateway.payers()[2]["id"]
    with pytest.raises(AlipayRejected) as refused:
        channel.pay_with_code(
            order(alipay_sandbox, 100_00), alipay_sandbox.gateway.current_code(poor)
        )
    assert refused.value.sub_code == "ACQ.BUYER_BALANCE_NOT_ENOUGH"


def test_the_sdk_itself_returns_a_refusal_as_if_it_were_an_answer(
    channel, alipay_sandbox
):
    # The gap the adapter closes: AliPay hands back a signed 40004 untouched.
    answer = channel._sdk.api_alipay_trade_query(out_trade_no="NO-SUCH-ORDER")
    assert answer["code"] == "40004"
    assert channel.query("NO-SUCH-ORDER").state == TradeState.NOT_FOUND


# -- orders for the phone and the desktop ----------


def test_precreate_qr_pays_on_the_payer_page(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    checkout = channel.create_order(request, PayerContext(PayerKind.PRECREATE))

    unseen = channel.query(request.out_trade_no)
    page = requests.get(checkout.qr_content, timeout=5)
    seen = channel.query(request.out_trade_no)
    payer = alipay_sandbox.gateway.payers()[0]["id"]
    paid_page = requests.post(
        page.url, data={"payer_id": payer, "action": "confirm"}, timeout=5
    )

    assert unseen.state == TradeState.NOT_FOUND  # Alipay: not scanned, no trade
    assert "确认付款" in page.text and page.text.index("确认付款") < page.text.index(
        "Pay"
    )
    assert seen.state == TradeState.PAYING
    assert "付款成功" in paid_page.text
    assert channel.query(request.out_trade_no).state == TradeState.SUCCEEDED


def test_wap_redirect_lands_on_the_payer_page_and_returns_signed(
    channel, alipay_sandbox
):
    request = order(alipay_sandbox)
    checkout = channel.create_order(
        request,
        PayerContext(PayerKind.WAP, return_url="https://campus.example/top-up/result"),
    )

    landing = requests.get(checkout.redirect_url, timeout=5)
    confirmed = requests.post(
        landing.url,
        timeout=5,
        allow_redirects=False,
        data={
            "payer_id": alipay_sandbox.gateway.payers()[0]["id"],
            "action": "confirm",
        },
    )
    back = dict(parse_qsl(urlsplit(confirmed.headers["Location"]).query))

    assert urlsplit(landing.url).path.startswith("/sandbox/alipay/pay/")
    assert confirmed.status_code == 302
    assert back["out_trade_no"] == request.out_trade_no
    assert back["method"] == "alipay.trade.wap.pay.return"
    signature = back.pop("sign")
    assert channel._sdk.verify(back, signature)


def test_page_pay_cancelled_by_the_payer_stays_payable(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    checkout = channel.create_order(request, PayerContext(PayerKind.PAGE))

    landing = requests.get(checkout.redirect_url, timeout=5)
    cancelled = requests.post(landing.url, data={"action": "cancel"}, timeout=5)

    assert "已取消" in cancelled.text
    assert channel.query(request.out_trade_no).state == TradeState.PAYING


def test_in_app_order_uses_the_buyer_id_from_user_authorisation(
    channel, alipay_sandbox
):
    url = channel.authorization_url("https://campus.example/alipay/back", state="s1")
    page = requests.get(url, timeout=5)
    payer = alipay_sandbox.gateway.payers()[1]["id"]
    granted = requests.post(
        page.url, data={"payer_id": payer}, timeout=5, allow_redirects=False
    )
    back = dict(parse_qsl(urlsplit(granted.headers["Location"]).query))

    buyer_id = channel.buyer_id(back["auth_code"])
    request = order(alipay_sandbox)
    checkout = channel.create_order(
        request, PayerContext(PayerKind.IN_APP, buyer_id=buyer_id)
    )

    assert "授权" in page.text
    assert back["state"] == "s1" and back["source"] == "alipay_wallet"
    assert buyer_id == alipay_sandbox.gateway.payers()[1]["user_id"]
    assert checkout.jsapi_params["tradeNO"]
    assert channel.query(request.out_trade_no).state == TradeState.PAYING
    with pytest.raises(AlipayRejected) as reused:
        channel.buyer_id(back["auth_code"])
    assert reused.value.sub_code == "isv.code-invalid"


# -- close, cancel, refund ------------------------------------------------------------


def test_close_an_unpaid_order_twice(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    checkout = channel.create_order(request, PayerContext(PayerKind.PRECREATE))
    requests.get(checkout.qr_content, timeout=5)

    channel.close(request.out_trade_no)
    channel.close(request.out_trade_no)

    assert channel.query(request.out_trade_no).state == TradeState.CLOSED


def test_closing_an_order_never_scanned_is_trade_not_exist(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    channel.create_order(request, PayerContext(PayerKind.PRECREATE))
    with pytest.raises(AlipayRejected) as refused:
        channel.close(request.out_trade_no)
    assert refused.value.sub_code == "ACQ.TRADE_NOT_EXIST"


def test_reverse_a_paid_code_payment_refunds_it(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    channel.pay_with_code(request, alipay_sandbox.payer_code())

    reversed_ = channel.reverse(request.out_trade_no)

    assert (reversed_.done, reversed_.retry, reversed_.action) == (
        True,
        False,
        "refund",
    )
    assert channel.query(request.out_trade_no).state == TradeState.CLOSED


def test_reverse_before_the_payment_arrives_blocks_it(channel, alipay_sandbox):
    request = order(alipay_sandbox)

    reversed_ = channel.reverse(request.out_trade_no)
    with pytest.raises(AlipayRejected) as late:
        channel.pay_with_code(request, alipay_sandbox.payer_code())

    assert reversed_.action == "close" and reversed_.done
    assert late.value.sub_code == "ACQ.TRADE_HAS_CLOSE"


def test_partial_refunds_up_to_the_total_and_not_beyond(channel, alipay_sandbox):
    request = order(alipay_sandbox, 1000)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    out = request.out_trade_no

    first = channel.refund(RefundRequest(out, f"{out}R1", 400, 1000))
    again = channel.refund(RefundRequest(out, f"{out}R1", 400, 1000))
    with pytest.raises(AlipayRejected) as too_much:
        channel.refund(RefundRequest(out, f"{out}R2", 700, 1000))
    rest = channel.refund(RefundRequest(out, f"{out}R3", 600, 1000))

    assert first.state == RefundState.SUCCEEDED and first.amount_fen == 400
    # Asked again, Alipay answers fund_change N: what the refund query says.
    assert (again.state, again.amount_fen) == (RefundState.SUCCEEDED, 400)
    assert "refund_status" in again.raw or "refund_amount" in again.raw
    assert too_much.value.sub_code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    assert rest.amount_fen == 600
    assert channel.query_refund(f"{out}R1", out).amount_fen == 400
    assert channel.query_refund(f"{out}R2", out).state == RefundState.NOT_FOUND
    assert channel.query(out).state == TradeState.CLOSED  # fully refunded


# -- notifications ----------


def test_payment_notification_verified_then_deduplicated(
    channel, alipay_sandbox, session
):
    request = order(alipay_sandbox)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    [body] = delivered(alipay_sandbox)

    notification = channel.parse_notification({}, body)
    remember_accepted(
        session, "alipay", notification.notification_id, request.out_trade_no
    )
    session.commit()

    assert notification.kind == NotificationKind.PAYMENT
    assert notification.payment.state == TradeState.SUCCEEDED
    assert notification.payment.amount_fen == 1250
    assert notification.merchant_id == channel.config.app_id
    assert notification.raw["seller_id"] == channel.config.seller_id
    with pytest.raises(DuplicateNotification):
        channel.parse_notification({}, body)


def test_refund_notification(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    channel.refund(RefundRequest(request.out_trade_no, "R-1", 250, 1250))
    _, body = delivered(alipay_sandbox)

    notification = channel.parse_notification({}, body)

    assert notification.kind == NotificationKind.REFUND
    assert notification.refund.out_refund_no == "R-1"
    assert notification.raw["refund_fee"] == "2.50"


def test_verify_is_given_a_copy(channel, alipay_sandbox):
    channel.pay_with_code(order(alipay_sandbox), alipay_sandbox.payer_code())
    [body] = delivered(alipay_sandbox)
    params = dict(parse_qsl(body.decode()))
    signature = params.pop("sign")

    # The SDK's verify() changes what it is handed...
    handed = dict(params)
    assert channel._sdk.verify(handed, signature)
    assert "sign_type" not in handed
    # ...so the adapter never hands it the parameters it keeps.
    notification = channel.parse_notification({}, body)
    assert notification.raw["sign_type"] == "RSA2"
    assert notification.raw["sign"] == signature


def test_a_tampered_notification_is_refused(channel, alipay_sandbox):
    channel.pay_with_code(order(alipay_sandbox), alipay_sandbox.payer_code())
    [body] = delivered(alipay_sandbox)
    with pytest.raises(BadNotificationSignature):
        channel.parse_notification(
            {}, body.replace(b"total_amount=12.50", b"total_amount=99.50")
        )
    with pytest.raises(BadNotificationSignature):
        channel.parse_notification(
            {},
            b"&".join(
                part for part in body.split(b"&") if not part.startswith(b"sign=")
            ),
        )


def test_a_stale_notification_is_refused(channel, alipay_sandbox):
    channel.pay_with_code(order(alipay_sandbox), alipay_sandbox.payer_code())
    [body] = delivered(alipay_sandbox)

    alipay_sandbox.sandbox.clock.advance(channel.config.notification_skew_seconds + 1)

    with pytest.raises(StaleNotification):
        channel.parse_notification({}, body)


def test_the_ack_alipay_expects(channel):
    assert channel.notification_ack(True)[0] == b"success"
    assert channel.notification_ack(False)[0] != b"success"


# -- timestamps ----------


@pytest.fixture
def new_york() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.mark.usefixtures("new_york")
def test_timestamps_are_beijing_time_whatever_the_process_zone(channel, alipay_sandbox):
    stamp = channel._sdk.build_body("alipay.trade.query", {})["timestamp"]
    now = alipay_sandbox.sandbox.clock.now().astimezone(SHANGHAI)
    sent = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    assert abs(sent - now) < dt.timedelta(seconds=5)

    # The bare SDK stamps New York time, which the gateway refuses...
    bare = AliPay(
        appid=channel.config.app_id,
        app_private_key_string=channel.config.app_private_key,
        alipay_public_key_string=channel.config.alipay_public_key,
    )
    bare._gateway = channel.config.gateway_url
    answer = bare.api_alipay_trade_query(out_trade_no="ANY")
    assert answer["sub_code"] == "isv.invalid-timestamp"
    # ...while the adapter's requests go through.
    assert channel.query("ANY").state == TradeState.NOT_FOUND


# -- bills ----------


def test_download_bill_returns_the_zip(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    day = alipay_sandbox.sandbox.clock.now().astimezone(SHANGHAI).date()
    alipay_sandbox.sandbox.clock.advance(86400)

    bill = channel.download_bill(day)
    parsed = parse_alipay_bill(bill.content)

    assert bill.filename == f"{channel.config.seller_id}_{day:%Y%m%d}.csv.zip"
    assert len(bill.sha256) == 64
    assert [line.out_trade_no for line in parsed.lines] == [request.out_trade_no]
    assert parsed.totals_match_summary()


def test_no_bill_for_today(channel, alipay_sandbox):
    today = alipay_sandbox.sandbox.clock.now().astimezone(SHANGHAI).date()
    with pytest.raises(AlipayRejected) as refused:
        channel.download_bill(today)
    assert refused.value.sub_code == "isp.bill_not_exist"


def test_config_is_frozen(channel):
    with pytest.raises(dataclasses.FrozenInstanceError):
        channel.config.app_id = "x"  # type: ignore[misc]


def test_a_reversed_code_payment_stays_in_the_bill_with_its_refund(
    channel, alipay_sandbox
):
    request = order(alipay_sandbox)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    channel.reverse(request.out_trade_no)
    day = alipay_sandbox.sandbox.clock.now().astimezone(SHANGHAI).date()
    alipay_sandbox.sandbox.clock.advance(86400)

    bill = parse_alipay_bill(channel.download_bill(day).content)

    assert [(line.kind, line.amount_fen) for line in bill.lines] == [
        ("交易", 1250),
        ("退款", -1250),
    ]
    assert bill.totals_match_summary()


def test_an_unpaid_order_closes_at_its_expiry(channel, alipay_sandbox):
    expires = alipay_sandbox.sandbox.clock.now() + dt.timedelta(minutes=10)
    request = order(alipay_sandbox, expires_at=expires)
    checkout = channel.create_order(request, PayerContext(PayerKind.PRECREATE))
    requests.get(checkout.qr_content, timeout=5)

    alipay_sandbox.sandbox.clock.advance(11 * 60)

    assert channel.query(request.out_trade_no).state == TradeState.CLOSED


def test_one_code_at_two_terminals_at_once_pays_once(channel, alipay_sandbox):
    code = alipay_sandbox.payer_code()
    orders = [order(alipay_sandbox), order(alipay_sandbox)]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def pay(request: OrderRequest) -> None:
        barrier.wait()
        try:
            outcomes.append(channel.pay_with_code(request, code).state)
        except AlipayRejected as refused:
            outcomes.append(refused.sub_code)

    threads = [threading.Thread(target=pay, args=(request,)) for request in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(map(str, outcomes)) == sorted(
        [str(TradeState.SUCCEEDED), "ACQ.PAYMENT_AUTH_CODE_INVALID"]
    )
