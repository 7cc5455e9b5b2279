"""Every WechatChannel call against the sandbox, through wechatpayv3 and real HTTP,
in platform-public-key mode and in platform-certificate mode."""

# The shared sandbox fixtures are imported by name, so each test's parameter of
# the same name looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from payments.channels.base import (
    ChannelRejected,
    NotificationKind,
    OrderRequest,
    PayerContext,
    PayerKind,
    RefundRequest,
    RefundState,
    TradeState,
)
from payments.channels.received import remember_accepted
from payments.channels.wechat import WechatChannel
from tests.sandbox.conftest import (  # noqa: F401 (fixtures)
    Receiver,
    ServedSandbox,
    _receiver,
    _served,
    make_wechat_channel,
    receiver,
    sandbox_instance,
    served_sandbox,
)

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture(params=["public_key", "certificate"])
def wechat(request: pytest.FixtureRequest, make_wechat_channel) -> WechatChannel:
    return make_wechat_channel(request.param)


def new_order(receiver: Receiver, amount_fen: int = 1250) -> OrderRequest:
    return OrderRequest(
        out_trade_no="T" + uuid.uuid4().hex[:24],
        amount_fen=amount_fen,
        description="校园卡充值 Campus card top-up",
        notify_url=receiver.url("/notify/wechat"),
    )


def prepay_of(qr: str) -> str:
    return parse_qs(urlsplit(qr).query)["pr"][0]


def test_native_order_paid_on_the_payer_page_notifies_and_queries_paid(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
    session,
) -> None:
    order = new_order(receiver)
    checkout = wechat.create_order(order, PayerContext(PayerKind.NATIVE))
    assert checkout.qr_content and checkout.qr_content.startswith("weixin://wxpay/")
    assert wechat.query(order.out_trade_no).state == TradeState.PAYING

    page = served_sandbox.pay(prepay_of(checkout.qr_content))
    assert page.status_code == 200
    assert served_sandbox.deliver() == 1

    notice = receiver.received[-1]
    notification = wechat.parse_notification(notice.headers, notice.body)
    assert notification.kind == NotificationKind.PAYMENT
    assert notification.merchant_id == wechat.config.mchid
    assert notification.payment is not None
    assert notification.payment.state == TradeState.SUCCEEDED
    assert notification.payment.amount_fen == 1250
    paid = wechat.query(order.out_trade_no)
    assert paid.state == TradeState.SUCCEEDED
    assert paid.transaction_id == notification.payment.transaction_id
    assert paid.paid_at is not None and paid.paid_at.utcoffset() == dt.timedelta(
        hours=8
    )
    again = wechat.query_by_transaction_id(paid.transaction_id or "")
    assert again.out_trade_no == order.out_trade_no
    assert remember_accepted(
        session, "wechat", notification.notification_id, order.out_trade_no
    )


def test_jsapi_order_for_the_openid_from_web_oauth(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    # The browser inside WeChat is sent to authorize, picks who it is, and comes
    # back to our redirect_uri with a code.
    start = wechat.authorize_url(receiver.url("/oauth/back"), state="s1")
    browser = requests.Session()
    chooser = browser.get(start, timeout=10)
    assert "张三" in chooser.text
    back = browser.post(
        start.split("#")[0], data={"payer": "demo-2"}, allow_redirects=False, timeout=10
    )
    assert back.status_code == 302
    query = parse_qs(urlsplit(back.headers["Location"]).query)
    assert query["state"] == ["s1"]
    openid = wechat.openid_for_code(query["code"][0])
    gateway = served_sandbox.sandbox.gateways["wechat"]
    assert openid == gateway.openid("demo-2")  # type: ignore[attr-defined]
    with pytest.raises(ChannelRejected) as reused:
        wechat.openid_for_code(query["code"][0])
    assert reused.value.error_code == "40163"

    order = new_order(receiver)
    checkout = wechat.create_order(order, PayerContext(PayerKind.JSAPI, openid=openid))
    params = checkout.jsapi_params
    assert params is not None and params["package"].startswith("prepay_id=")
    # The sandbox's stand-in for getBrandWCPayRequest checks paySign.
    cashier_url = checkout.raw["sandbox_cashier_url"]
    assert cashier_url.startswith(f"{served_sandbox.url}/pay/wechat/jsapi?")
    cashier = requests.get(cashier_url, allow_redirects=False, timeout=10)
    assert cashier.status_code == 302
    forged = dict(params, paySign=params["paySign"][::-1])
    refused = requests.get(
        f"{served_sandbox.url}/pay/wechat/jsapi", params=forged, timeout=10
    )
    assert refused.status_code == 400
    assert (
        served_sandbox.pay(
            params["package"][len("prepay_id=") :], payer="demo-2"
        ).status_code
        == 200
    )
    result = wechat.query(order.out_trade_no)
    assert result.state == TradeState.SUCCEEDED
    assert result.payer_id == openid


def test_h5_order_sends_the_browser_to_the_cashier_and_back(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = new_order(receiver)
    checkout = wechat.create_order(
        order,
        PayerContext(
            PayerKind.H5,
            client_ip="10.1.2.3",
            return_url="http://127.0.0.1/topup/result",
        ),
    )
    assert checkout.redirect_url is not None
    cashier = requests.get(checkout.redirect_url, timeout=10)
    assert "12.50" in cashier.text
    assert "redirect_url=" in checkout.redirect_url
    prepay_id = urlsplit(checkout.redirect_url).path.rsplit("/", 1)[-1]
    paid = served_sandbox.pay(prepay_id, redirect_url="http://127.0.0.1/topup/result")
    assert paid.status_code == 302
    assert paid.headers["Location"] == "http://127.0.0.1/topup/result"
    assert wechat.query(order.out_trade_no).state == TradeState.SUCCEEDED


def test_app_order_gives_signed_parameters_for_the_app(
    wechat: WechatChannel,
    receiver: Receiver,
) -> None:
    checkout = wechat.create_order(new_order(receiver), PayerContext(PayerKind.APP))
    params = checkout.raw["app_params"]
    assert params["package"] == "Sign=WXPay" and params["prepayid"].startswith("wx")
    assert params["sign"]


def test_repeating_a_create_gives_the_same_prepay_and_a_changed_one_is_refused(
    wechat: WechatChannel,
    receiver: Receiver,
) -> None:
    order = new_order(receiver)
    first = wechat.create_order(order, PayerContext(PayerKind.NATIVE))
    again = wechat.create_order(order, PayerContext(PayerKind.NATIVE))
    assert first.qr_content == again.qr_content
    changed = OrderRequest(order.out_trade_no, 999, order.description, order.notify_url)
    with pytest.raises(ChannelRejected) as refused:
        wechat.create_order(changed, PayerContext(PayerKind.NATIVE))
    assert refused.value.error_code == "OUT_TRADE_NO_USED"


def test_code_payment_is_paid_at_once_and_the_code_works_only_once(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    gateway = served_sandbox.sandbox.gateways["wechat"]
    code = gateway.current_code("demo-1")
    assert len(code) == 18 and 10 <= int(code[:2]) <= 15
    result = wechat.pay_with_code(new_order(receiver, 800), code)
    assert result.state == TradeState.SUCCEEDED and result.amount_fen == 800
    with pytest.raises(ChannelRejected) as used:
        wechat.pay_with_code(new_order(receiver, 800), code)
    assert used.value.error_code == "AUTHCODEEXPIRE"
    assert gateway.current_code("demo-1") != code


def test_code_payment_beyond_the_balance_is_refused(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    code = served_sandbox.sandbox.gateways["wechat"].current_code("demo-3")
    order = new_order(receiver, 1_000_000)
    with pytest.raises(ChannelRejected) as refused:
        wechat.pay_with_code(order, code)
    assert refused.value.error_code == "NOTENOUGH"
    assert wechat.query(order.out_trade_no).state == TradeState.FAILED


def test_code_payment_waiting_for_the_password_is_paid_when_it_is_typed(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    gateway = served_sandbox.sandbox.gateways["wechat"]
    gateway.set_password_needed("demo-1", 20)
    order = new_order(receiver, 300)
    pending = wechat.pay_with_code(order, gateway.current_code("demo-1"))
    assert pending.state == TradeState.PAYING and pending.error_code == "USERPAYING"
    assert wechat.query(order.out_trade_no).state == TradeState.PAYING
    served_sandbox.clock.advance(21)
    assert wechat.query(order.out_trade_no).state == TradeState.SUCCEEDED
    # The switch is for the next payment only.
    assert (
        wechat.pay_with_code(
            new_order(receiver, 300), gateway.current_code("demo-1")
        ).state
        == TradeState.SUCCEEDED
    )


def test_reverse_gives_a_paid_code_payment_back(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    gateway = served_sandbox.sandbox.gateways["wechat"]
    before = {p["id"]: p["balance_fen"] for p in gateway.payers()}["demo-2"]
    order = new_order(receiver, 450)
    wechat.pay_with_code(order, gateway.current_code("demo-2"))
    reversed_ = wechat.reverse(order.out_trade_no)
    assert reversed_.done and not reversed_.retry
    assert wechat.query(order.out_trade_no).state == TradeState.REVERSED
    after = {p["id"]: p["balance_fen"] for p in gateway.payers()}["demo-2"]
    assert after == before


def test_close_makes_an_unpaid_order_unpayable(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = new_order(receiver)
    checkout = wechat.create_order(order, PayerContext(PayerKind.NATIVE))
    wechat.close(order.out_trade_no)
    assert wechat.query(order.out_trade_no).state == TradeState.CLOSED
    assert served_sandbox.pay(prepay_of(checkout.qr_content or "")).status_code == 409
    wechat.close("never-created-" + uuid.uuid4().hex[:8])


def test_closing_a_paid_order_is_refused_with_orderpaid(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = new_order(receiver)
    wechat.pay_with_code(
        order, served_sandbox.sandbox.gateways["wechat"].current_code("demo-1")
    )
    with pytest.raises(ChannelRejected) as refused:
        wechat.close(order.out_trade_no)
    assert refused.value.error_code == "ORDERPAID"


def test_unknown_order_and_refund_are_not_found(wechat: WechatChannel) -> None:
    assert wechat.query("nothing-" + uuid.uuid4().hex[:8]).state == TradeState.NOT_FOUND
    assert wechat.query_refund("R-none", "nothing").state == RefundState.NOT_FOUND


def test_refund_succeeds_later_and_notifies(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = new_order(receiver, 2000)
    wechat.pay_with_code(
        order, served_sandbox.sandbox.gateways["wechat"].current_code("demo-1")
    )
    request = RefundRequest(
        order.out_trade_no,
        "R" + uuid.uuid4().hex[:20],
        500,
        2000,
        reason="退一部分",
        notify_url=receiver.url("/notify/refund"),
    )
    asked = wechat.refund(request)
    assert asked.state == RefundState.PROCESSING and asked.amount_fen == 500
    assert served_sandbox.deliver() == 0

    served_sandbox.clock.advance(6)
    done = wechat.query_refund(request.out_refund_no, order.out_trade_no)
    assert done.state == RefundState.SUCCEEDED and done.refund_id == asked.refund_id
    assert served_sandbox.deliver() == 1
    notice = receiver.received[-1]
    notification = wechat.parse_notification(notice.headers, notice.body)
    assert notification.kind == NotificationKind.REFUND
    assert notification.refund is not None
    assert notification.refund.state == RefundState.SUCCEEDED
    assert notification.refund.amount_fen == 500
    assert wechat.query(order.out_trade_no).state == TradeState.REFUNDED
    with pytest.raises(ChannelRejected):
        wechat.refund(
            RefundRequest(order.out_trade_no, "R" + uuid.uuid4().hex[:20], 1600, 2000)
        )


def test_trade_bill_downloads_checked_and_lists_the_day(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    from reconciliation.bills.wechat import parse_trade_bill

    order = new_order(receiver, 1999)
    paid = wechat.pay_with_code(
        order, served_sandbox.sandbox.gateways["wechat"].current_code("demo-1")
    )
    assert paid.paid_at is not None
    day = paid.paid_at.astimezone(SHANGHAI).date()
    with pytest.raises(ChannelRejected) as early:
        wechat.download_bill(day)
    assert early.value.error_code == "NO_STATEMENT_EXIST"

    served_sandbox.clock.set(
        dt.datetime.combine(day + dt.timedelta(days=1), dt.time(10, 30), SHANGHAI)
    )
    bill = wechat.download_bill(day)
    rows = {row.out_trade_no: row for row in parse_trade_bill(bill.content).rows}
    assert rows[order.out_trade_no].settled_fen == 1999
    assert rows[order.out_trade_no].transaction_id == paid.transaction_id
    assert bill.filename.endswith(".csv") and len(bill.sha256) == 64


def test_our_acknowledgements_are_what_wechat_pay_expects(
    wechat: WechatChannel, served_sandbox: ServedSandbox, receiver: Receiver
) -> None:
    refused_body, refused_status, refused_headers = wechat.notification_ack(False)
    accepted_body, accepted_status, _ = wechat.notification_ack(True)
    assert refused_status >= 400 and json.loads(refused_body)["code"] == "FAIL"
    assert refused_headers["Content-Type"] == "application/json"
    assert 200 <= accepted_status < 300 and accepted_body == b""

    receiver.answers = [(refused_status, refused_body)]
    receiver.default = (accepted_status, accepted_body)
    order = new_order(receiver)
    checkout = wechat.create_order(order, PayerContext(PayerKind.NATIVE))
    served_sandbox.pay(prepay_of(checkout.qr_content or ""))
    assert served_sandbox.deliver() == 0  # refused: WeChat Pay will try again
    served_sandbox.clock.advance(15)
    assert served_sandbox.deliver() == 1  # accepted: no more attempts
    served_sandbox.clock.advance(3600)
    assert served_sandbox.deliver() == 0 and len(receiver.received) == 2


def test_an_order_past_its_expiry_can_no_longer_be_paid(
    wechat: WechatChannel, served_sandbox: ServedSandbox, receiver: Receiver
) -> None:
    base = new_order(receiver)
    order = OrderRequest(
        base.out_trade_no,
        base.amount_fen,
        base.description,
        base.notify_url,
        expires_at=served_sandbox.clock.now() + dt.timedelta(minutes=5),
    )
    checkout = wechat.create_order(order, PayerContext(PayerKind.NATIVE))
    served_sandbox.clock.advance(301)
    assert served_sandbox.pay(prepay_of(checkout.qr_content or "")).status_code == 409
    assert wechat.query(order.out_trade_no).state == TradeState.PAYING
    wechat.close(order.out_trade_no)
    assert wechat.query(order.out_trade_no).state == TradeState.CLOSED
