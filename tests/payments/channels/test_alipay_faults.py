"""Each sandbox fault switch, and what the Alipay adapter reports for it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from urllib.parse import parse_qsl

import pytest

from payments.channels.alipay import AlipayChannel, AlipayConfig
from payments.channels.alipay.channel import SHANGHAI, AlipayRejected, AlipayUnavailable
from payments.channels.base import (
    BadNotificationSignature,
    DuplicateNotification,
    ForgedResponse,
    NotificationKind,
    RefundRequest,
    TradeState,
)
from payments.channels.received import remember_accepted
from reconciliation.bills.alipay import parse_alipay_bill
from sandbox.alipay import testing
from sandbox.alipay.keys import ensure_keys
from tests.payments.channels import test_alipay_channel as common

alipay_keys = testing.alipay_keys
alipay_sandbox = testing.alipay_sandbox
_alipay_servers = testing._alipay_servers
channel = common.channel
order = common.order
delivered = common.delivered

FAULT = "alipay"


def set_fault(alipay, name, value, out_trade_no="*"):
    alipay.sandbox.faults.set(FAULT, name, value, out_trade_no)


# -- answers ----------


def test_latency_past_the_timeout_is_unavailable(channel, alipay_sandbox):
    impatient = AlipayChannel(
        dataclasses.replace(channel.config, timeout_seconds=0.2),
        clock=alipay_sandbox.sandbox.clock.now,
    )
    set_fault(alipay_sandbox, "latency_ms", 700)

    with pytest.raises(AlipayUnavailable) as unknown:
        impatient.query("ANY")

    assert isinstance(unknown.value.__cause__, OSError)


def test_latency_within_the_timeout_is_only_slow(channel, alipay_sandbox):
    set_fault(alipay_sandbox, "latency_ms", 50)
    assert channel.query("ANY").state == TradeState.NOT_FOUND


def test_no_answer_before_acting_leaves_nothing_paid(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "no_answer", "before", request.out_trade_no)

    with pytest.raises(AlipayUnavailable):
        channel.pay_with_code(request, alipay_sandbox.payer_code())
    alipay_sandbox.sandbox.faults.clear(FAULT)

    assert channel.query(request.out_trade_no).state == TradeState.NOT_FOUND


def test_no_answer_after_acting_is_unknown_until_queried(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "no_answer", "after", request.out_trade_no)

    with pytest.raises(AlipayUnavailable):
        channel.pay_with_code(request, alipay_sandbox.payer_code())
    alipay_sandbox.sandbox.faults.clear(FAULT)

    # The money moved: a timeout is never a failure.
    assert channel.query(request.out_trade_no).state == TradeState.SUCCEEDED


def test_http_5xx_is_unavailable(channel, alipay_sandbox):
    set_fault(alipay_sandbox, "server_error", "5xx")
    with pytest.raises(AlipayUnavailable) as unknown:
        channel.query("ANY")
    assert "HTTPError" in str(unknown.value)


@pytest.mark.parametrize(
    ("value", "code", "sub_code"),
    [
        ("20000", "20000", "isp.unknow-error"),
        ("ACQ", "40004", "ACQ.SYSTEM_ERROR"),
    ],
)
def test_system_errors_are_unavailable(channel, alipay_sandbox, value, code, sub_code):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "server_error", value)

    with pytest.raises(AlipayUnavailable) as unknown:
        channel.pay_with_code(request, alipay_sandbox.payer_code())

    assert (unknown.value.code, unknown.value.error_code) == (code, sub_code)
    alipay_sandbox.sandbox.faults.clear(FAULT)
    assert channel.query(request.out_trade_no).state == TradeState.NOT_FOUND


def test_cancel_during_a_system_error_asks_to_retry(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    set_fault(alipay_sandbox, "server_error", "ACQ", request.out_trade_no)

    first = channel.reverse(request.out_trade_no)
    alipay_sandbox.sandbox.faults.clear(FAULT)
    second = channel.reverse(request.out_trade_no)

    assert (first.done, first.retry) == (False, True)
    assert (second.done, second.action) == (True, "refund")


def test_cancel_told_not_to_retry_is_a_refusal(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    set_fault(alipay_sandbox, "server_error", "ACQ_no_retry", request.out_trade_no)

    with pytest.raises(AlipayRejected) as refused:
        channel.reverse(request.out_trade_no)

    assert refused.value.sub_code == "ACQ.SYSTEM_ERROR"
    assert refused.value.response["retry_flag"] == "N"


def test_user_paying_for_n_seconds(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "user_paying_seconds", 20, request.out_trade_no)

    paying = channel.pay_with_code(request, alipay_sandbox.payer_code())
    alipay_sandbox.sandbox.clock.advance(10)
    still = channel.query(request.out_trade_no)
    alipay_sandbox.sandbox.clock.advance(11)
    paid = channel.query(request.out_trade_no)

    assert [paying.state, still.state, paid.state] == [
        TradeState.PAYING,
        TradeState.PAYING,
        TradeState.SUCCEEDED,
    ]


def test_user_paying_then_cancelled_closes(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "user_paying_seconds", 60, request.out_trade_no)
    channel.pay_with_code(request, alipay_sandbox.payer_code())

    cancelled = channel.reverse(request.out_trade_no)
    alipay_sandbox.sandbox.clock.advance(61)

    assert cancelled.action == "close"
    assert channel.query(request.out_trade_no).state == TradeState.CLOSED


@pytest.mark.parametrize("mode", ["bad", "missing"])
def test_an_answer_without_a_valid_signature_is_forged(channel, alipay_sandbox, mode):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "response_signature", mode, request.out_trade_no)
    with pytest.raises(ForgedResponse):
        channel.pay_with_code(request, alipay_sandbox.payer_code())


@pytest.mark.parametrize("mode", ["bad", "missing"])
def test_a_refusal_without_a_valid_signature_is_forged(channel, alipay_sandbox, mode):
    # Unknown methods come back as error_response, which the SDK never
    # verifies; the adapter does.
    set_fault(alipay_sandbox, "response_signature", mode)
    with pytest.raises(ForgedResponse):
        channel.buyer_id("no-such-code")


def test_a_request_signed_with_another_key_is_refused(
    channel, alipay_sandbox, tmp_path
):
    stranger = ensure_keys(tmp_path / "elsewhere")
    impostor = AlipayChannel(
        dataclasses.replace(channel.config, app_private_key=stranger.app_private_key),
        clock=alipay_sandbox.sandbox.clock.now,
    )
    code = alipay_sandbox.payer_code()
    with pytest.raises(AlipayRejected) as refused:
        impostor.pay_with_code(order(alipay_sandbox), code)
    assert (refused.value.code, refused.value.sub_code) == (
        "40002",
        "isv.invalid-signature",
    )
    # Alipay echoes the string it checked, payment code and all: not in our
    # message, which callers log.
    assert code in refused.value.response["sub_msg"]
    assert code not in str(refused.value)


def test_an_answer_signed_by_someone_else_is_forged(channel, alipay_sandbox, tmp_path):
    stranger = ensure_keys(tmp_path / "elsewhere")
    fooled = AlipayChannel(
        dataclasses.replace(
            channel.config, alipay_public_key=stranger.alipay_public_key
        ),
        clock=alipay_sandbox.sandbox.clock.now,
    )
    with pytest.raises(ForgedResponse):
        fooled.query("ANY")


# -- notifications ----------


def test_dropped_notification_never_arrives_and_query_finds_the_payment(
    channel, alipay_sandbox
):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "notification", "drop", request.out_trade_no)

    channel.pay_with_code(request, alipay_sandbox.payer_code())
    alipay_sandbox.sandbox.clock.advance(86400)

    assert delivered(alipay_sandbox) == []
    assert alipay_sandbox.gateway.dropped[0]["out_trade_no"] == request.out_trade_no
    assert channel.query(request.out_trade_no).state == TradeState.SUCCEEDED


def test_duplicated_notification_is_acted_on_once(channel, alipay_sandbox, session):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "notification", "duplicate", request.out_trade_no)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    first, second = delivered(alipay_sandbox)

    notification = channel.parse_notification({}, first)
    remember_accepted(
        session, "alipay", notification.notification_id, request.out_trade_no
    )
    session.commit()

    with pytest.raises(DuplicateNotification):
        channel.parse_notification({}, second)


def test_delayed_notification_arrives_when_its_time_comes(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "notification_delay_s", 90, request.out_trade_no)
    channel.pay_with_code(request, alipay_sandbox.payer_code())

    early = list(delivered(alipay_sandbox))
    alipay_sandbox.sandbox.clock.advance(91)
    [late] = delivered(alipay_sandbox)

    assert early == []
    # Stamped when sent, so not stale on arrival.
    assert channel.parse_notification({}, late).payment.state == TradeState.SUCCEEDED


def test_reordered_notifications_bring_the_refund_first(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "notification", "reorder", request.out_trade_no)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    channel.refund(RefundRequest(request.out_trade_no, "R-1", 250, 1250))

    first, second = delivered(alipay_sandbox)

    assert channel.parse_notification({}, first).kind == NotificationKind.REFUND
    assert channel.parse_notification({}, second).kind == NotificationKind.PAYMENT


def test_notification_with_a_wrong_signature_is_refused(channel, alipay_sandbox):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "notification", "bad_signature", request.out_trade_no)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    [body] = delivered(alipay_sandbox)

    with pytest.raises(BadNotificationSignature):
        channel.parse_notification({}, body)


def test_notification_with_a_different_amount_reports_that_amount(
    channel, alipay_sandbox
):
    request = order(alipay_sandbox)
    set_fault(alipay_sandbox, "notification", "different_amount", request.out_trade_no)
    channel.pay_with_code(request, alipay_sandbox.payer_code())
    [body] = delivered(alipay_sandbox)

    notification = channel.parse_notification({}, body)

    # Signed correctly: the caller's amount check is what must catch it.
    assert notification.payment.amount_fen == request.amount_fen + 100


# -- bills ----------


def paid_yesterday(channel, alipay, count=3):
    requests_ = [order(alipay, 1000 + n) for n in range(count)]
    for request in requests_:
        channel.pay_with_code(request, alipay.payer_code())
    day = alipay.sandbox.clock.now().astimezone(SHANGHAI).date()
    alipay.sandbox.clock.advance(86400)
    return requests_, day


def test_bill_with_a_line_missing(channel, alipay_sandbox):
    requests_, day = paid_yesterday(channel, alipay_sandbox)
    set_fault(alipay_sandbox, "bill_missing_line", True, requests_[1].out_trade_no)

    bill = parse_alipay_bill(channel.download_bill(day).content)

    listed = {line.out_trade_no for line in bill.lines}
    assert listed == {requests_[0].out_trade_no, requests_[2].out_trade_no}
    assert bill.totals_match_summary()


def test_bill_with_a_changed_amount(channel, alipay_sandbox):
    requests_, day = paid_yesterday(channel, alipay_sandbox)
    set_fault(alipay_sandbox, "bill_amount_delta_fen", -7, requests_[0].out_trade_no)

    bill = parse_alipay_bill(channel.download_bill(day).content)

    amounts = {line.out_trade_no: line.amount_fen for line in bill.lines}
    assert amounts[requests_[0].out_trade_no] == requests_[0].amount_fen - 7
    assert amounts[requests_[1].out_trade_no] == requests_[1].amount_fen


def test_bill_with_an_order_paid_after_midnight(channel, alipay_sandbox):
    requests_, day = paid_yesterday(channel, alipay_sandbox)
    moved = requests_[2].out_trade_no
    set_fault(alipay_sandbox, "bill_after_midnight", True, moved)
    alipay_sandbox.sandbox.clock.advance(86400)

    that_day = parse_alipay_bill(channel.download_bill(day).content)
    next_day = parse_alipay_bill(
        channel.download_bill(day + dt.timedelta(days=1)).content
    )

    assert moved not in {line.out_trade_no for line in that_day.lines}
    [line] = [line for line in next_day.lines if line.out_trade_no == moved]
    assert line.finished_at.date() == day + dt.timedelta(days=1)
    assert line.finished_at.hour == 0


def test_bill_url_expires(channel, alipay_sandbox):
    _, day = paid_yesterday(channel, alipay_sandbox, count=1)
    answer = channel._sdk.server_api(
        "alipay.data.dataservice.bill.downloadurl.query",
        {"bill_type": "trade", "bill_date": day.isoformat()},
    )
    url = answer["bill_download_url"]
    query = dict(parse_qsl(url.partition("?")[2]))
    alipay_sandbox.sandbox.clock.advance(31)

    import requests

    assert query["fileType"] == "csv.zip"
    assert requests.get(url, timeout=5).status_code == 403


def test_sandbox_config_is_the_default(channel, alipay_sandbox):
    assert isinstance(channel.config, AlipayConfig)
    assert channel.config.sandbox
    assert channel.config.gateway_url == alipay_sandbox.gateway_url
