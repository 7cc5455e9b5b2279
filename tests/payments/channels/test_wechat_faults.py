"""Each sandbox fault switch, and what our WeChat adapter reports under it."""

# The shared sandbox fixtures are imported by name, so each test's parameter of
# the same name looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from payments.channels.base import (
    BadNotificationSignature,
    ChannelUnavailable,
    DuplicateNotification,
    OrderRequest,
    PayerContext,
    PayerKind,
    TradeState,
)
from payments.channels.received import remember_accepted
from payments.channels.wechat import WechatChannel
from reconciliation.bills.wechat import parse_trade_bill
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


@pytest.fixture
def wechat(make_wechat_channel) -> WechatChannel:
    # A generous timeout for every test but those about timeouts: on a loaded
    # 2-core CI machine a plain call can take longer than half a second.
    return make_wechat_channel("public_key", timeout_seconds=10)


@pytest.fixture
def impatient(make_wechat_channel) -> WechatChannel:
    return make_wechat_channel("public_key", timeout_seconds=0.5)


def order_for(receiver: Receiver, amount_fen: int = 100) -> OrderRequest:
    return OrderRequest(
        "F" + uuid.uuid4().hex[:24], amount_fen, "故障 fault", receiver.url("/notify")
    )


def fault(served: ServedSandbox, name: str, value: object, order: str = "*") -> None:
    served.sandbox.faults.set("wechat", name, value, order)


def paid_native(
    served: ServedSandbox, wechat: WechatChannel, order: OrderRequest
) -> None:
    checkout = wechat.create_order(order, PayerContext(PayerKind.NATIVE))
    assert (
        served.pay((checkout.qr_content or "").rsplit("pr=", 1)[1]).status_code == 200
    )


def test_latency_beyond_our_timeout_is_unavailable_not_failed(
    wechat: WechatChannel,
    impatient: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "latency_ms", 1500)
    with pytest.raises(ChannelUnavailable):
        impatient.create_order(order, PayerContext(PayerKind.NATIVE))
    served_sandbox.sandbox.faults.clear("wechat")
    # The slow call did reach WeChat Pay: the outcome was unknown, not a failure.
    assert wechat.query(order.out_trade_no).state == TradeState.PAYING


def test_latency_within_our_timeout_is_only_slow(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "latency_ms", 100, order.out_trade_no)
    assert wechat.create_order(order, PayerContext(PayerKind.NATIVE)).qr_content


def test_no_answer_at_all_is_unavailable(
    impatient: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "no_answer", 3, order.out_trade_no)
    with pytest.raises(ChannelUnavailable, match="in time"):
        impatient.query(order.out_trade_no)


@pytest.mark.parametrize("status", [502, 503])
def test_a_proxy_5xx_is_unavailable(
    status: int,
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
) -> None:
    fault(served_sandbox, "http_status", status)
    with pytest.raises(ChannelUnavailable) as raised:
        wechat.query("anything")
    assert raised.value.error_code is None


def test_system_error_is_unavailable_with_its_code(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "system_error", True, order.out_trade_no)
    code = served_sandbox.sandbox.gateways["wechat"].current_code("demo-1")
    with pytest.raises(ChannelUnavailable) as raised:
        wechat.pay_with_code(order, code)
    assert raised.value.error_code == "SYSTEM_ERROR"
    assert raised.value.out_trade_no == order.out_trade_no


def test_user_paying_for_n_seconds_then_paid(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver, 660)
    fault(served_sandbox, "user_paying_seconds", 30, order.out_trade_no)
    code = served_sandbox.sandbox.gateways["wechat"].current_code("demo-1")
    assert wechat.pay_with_code(order, code).state == TradeState.PAYING
    served_sandbox.clock.advance(29)
    assert wechat.query(order.out_trade_no).state == TradeState.PAYING
    served_sandbox.clock.advance(2)
    paid = wechat.query(order.out_trade_no)
    assert paid.state == TradeState.SUCCEEDED and paid.amount_fen == 660


def test_user_paying_past_our_deadline_is_reversed(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver, 660)
    fault(served_sandbox, "user_paying_seconds", 120, order.out_trade_no)
    code = served_sandbox.sandbox.gateways["wechat"].current_code("demo-1")
    assert wechat.pay_with_code(order, code).state == TradeState.PAYING
    served_sandbox.clock.advance(45)
    assert wechat.reverse(order.out_trade_no).done
    served_sandbox.clock.advance(120)
    assert wechat.query(order.out_trade_no).state == TradeState.REVERSED


def test_dropped_notification_never_arrives_but_the_query_says_paid(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "notification", "drop", order.out_trade_no)
    paid_native(served_sandbox, wechat, order)
    served_sandbox.clock.advance(86400)
    assert served_sandbox.deliver() == 0 and receiver.received == []
    assert wechat.query(order.out_trade_no).state == TradeState.SUCCEEDED


def test_duplicated_notification_is_refused_the_second_time(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
    session,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "notification", "duplicate", order.out_trade_no)
    paid_native(served_sandbox, wechat, order)
    assert served_sandbox.deliver() == 2
    first, second = receiver.received
    accepted = wechat.parse_notification(first.headers, first.body)
    remember_accepted(session, "wechat", accepted.notification_id, order.out_trade_no)
    with pytest.raises(DuplicateNotification):
        wechat.parse_notification(second.headers, second.body)


def test_delayed_notification_comes_when_the_clock_has_moved(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "notification", "delay", order.out_trade_no)
    fault(served_sandbox, "notification_delay_seconds", 120, order.out_trade_no)
    paid_native(served_sandbox, wechat, order)
    assert served_sandbox.deliver() == 0
    served_sandbox.clock.advance(121)
    assert served_sandbox.deliver() == 1
    late = receiver.received[-1]
    # Signed when sent, so it is still fresh by our clock.
    assert wechat.parse_notification(late.headers, late.body).payment is not None


def test_reordered_notification_arrives_after_a_later_one(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    early, later = order_for(receiver), order_for(receiver)
    fault(served_sandbox, "notification", "reorder", early.out_trade_no)
    paid_native(served_sandbox, wechat, early)
    paid_native(served_sandbox, wechat, later)
    served_sandbox.clock.advance(2)
    assert served_sandbox.deliver() == 2
    arrived = [
        wechat.parse_notification(r.headers, r.body).payment.out_trade_no  # type: ignore[union-attr]
        for r in receiver.received
    ]
    assert arrived == [later.out_trade_no, early.out_trade_no]


def test_notification_with_a_wrong_signature_is_refused(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    order = order_for(receiver)
    fault(served_sandbox, "notification", "bad_signature", order.out_trade_no)
    paid_native(served_sandbox, wechat, order)
    served_sandbox.deliver()
    notice = receiver.received[-1]
    with pytest.raises(BadNotificationSignature):
        wechat.parse_notification(notice.headers, notice.body)


def test_notification_with_a_different_amount_reports_what_it_says(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    # Validly signed and decrypted: comparing with our order is the caller's job,
    # so the adapter must hand over the amount the notification states.
    order = order_for(receiver, 500)
    fault(served_sandbox, "notification", "amount", order.out_trade_no)
    fault(served_sandbox, "notification_amount_delta_fen", 7, order.out_trade_no)
    paid_native(served_sandbox, wechat, order)
    served_sandbox.deliver()
    notice = receiver.received[-1]
    stated = wechat.parse_notification(notice.headers, notice.body).payment
    assert stated is not None and stated.amount_fen == 507
    assert wechat.query(order.out_trade_no).amount_fen == 500


def bill_rows(wechat: WechatChannel, served: ServedSandbox, *orders: OrderRequest):
    code_of = served.sandbox.gateways["wechat"].current_code
    paid = [wechat.pay_with_code(order, code_of("demo-1")) for order in orders]
    day = paid[0].paid_at.date()  # type: ignore[union-attr]
    served.clock.set(
        dt.datetime.combine(
            day + dt.timedelta(days=2), dt.time(11), paid[0].paid_at.tzinfo
        )
    )  # type: ignore[union-attr]
    rows = {
        r.out_trade_no: r
        for r in parse_trade_bill(wechat.download_bill(day).content).rows
    }
    after = (
        parse_trade_bill(wechat.download_bill(day + dt.timedelta(days=1)).content)
        if any(
            served.sandbox.faults.get("wechat", "bill", o.out_trade_no)
            == "after_midnight"
            for o in orders
        )
        else None
    )
    return rows, after


def test_bill_with_a_line_missing(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    kept, lost = order_for(receiver), order_for(receiver)
    fault(served_sandbox, "bill", "missing_line", lost.out_trade_no)
    rows, _ = bill_rows(wechat, served_sandbox, kept, lost)
    assert kept.out_trade_no in rows and lost.out_trade_no not in rows


def test_bill_with_a_changed_amount(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    changed = order_for(receiver, 300)
    fault(served_sandbox, "bill", "changed_amount", changed.out_trade_no)
    rows, _ = bill_rows(wechat, served_sandbox, changed)
    assert rows[changed.out_trade_no].settled_fen == 400


def test_bill_with_an_order_paid_after_midnight(
    wechat: WechatChannel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    late = order_for(receiver)
    fault(served_sandbox, "bill", "after_midnight", late.out_trade_no)
    rows, next_day = bill_rows(wechat, served_sandbox, order_for(receiver), late)
    assert late.out_trade_no not in rows
    assert next_day is not None
    moved = [r for r in next_day.rows if r.out_trade_no == late.out_trade_no]
    assert len(moved) == 1 and moved[0].traded_at.hour == 0
