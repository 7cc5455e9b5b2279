"""WeChat and Alipay payment codes at a terminal, end to end over real HTTP: our
signed API, the real SDKs, the sandbox gateways and their fault switches. The
poll loop's pauses move the sandbox clock (``fast_poll``), so no test waits."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from campus.database import db
from payments import ledger
from payments.channel_log import ChannelCall
from payments.channels.base import PayerContext, PayerKind
from payments.pos.models import PosPayment
from payments.pos.service import resolve_stale, start_qr_payment

from .conftest import in_app, new_order_no


def _code(live_app, channel: str, payer: str = "demo-1") -> str:
    return live_app.sandbox.gateways[channel].current_code(payer)


def _calls(session, out_trade_no: str) -> list[tuple[str, str]]:
    session.rollback()
    return [
        (call.operation, call.outcome)
        for call in session.scalars(
            select(ChannelCall)
            .where(ChannelCall.out_trade_no == out_trade_no)
            .order_by(ChannelCall.id)
        )
    ]


def _settled(session, merchant, channel: str, amount_fen: int) -> None:
    session.rollback()
    assert merchant.payable.balance_fen == amount_fen
    assert ledger.clearing_account(session, channel).balance_fen == -amount_fen
    assert ledger.check_ledger(session) == []


def test_a_wechat_code_is_paid(live_app, live_terminal, session, merchant, fast_poll):
    code = _code(live_app, "wechat")

    status, answer = live_terminal.pay(1250, code=code)

    assert (status, answer["state"], answer["channel"]) == (200, "succeeded", "wechat")
    assert answer["transaction_id"]
    _settled(session, merchant, "wechat", 1250)
    call = session.scalars(
        select(ChannelCall).where(ChannelCall.operation == "pay_with_code")
    ).one()
    assert code not in call.request and code not in (call.response or "")


def test_an_alipay_code_is_paid(live_app, live_terminal, session, merchant, fast_poll):
    status, answer = live_terminal.pay(880, code=_code(live_app, "alipay"))

    assert (status, answer["state"], answer["channel"]) == (200, "succeeded", "alipay")
    _settled(session, merchant, "alipay", 880)


def test_a_refused_code_fails_with_the_channels_reason(
    live_app, live_terminal, session, merchant, fast_poll
):
    status, answer = live_terminal.pay(10**9, code=_code(live_app, "wechat"))

    assert (answer["state"], answer["failure_code"]) == ("failed", "NOTENOUGH")
    assert answer["failure_message"]
    _settled(session, merchant, "wechat", 0)


def test_wechat_userpaying_then_paid(
    live_app, live_terminal, session, merchant, fast_poll
):
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 10)

    status, answer = live_terminal.pay(600, code=_code(live_app, "wechat"))

    assert answer["state"] == "succeeded"
    operations = [operation for operation, _ in _calls(session, answer["out_trade_no"])]
    assert operations[0] == "pay_with_code" and "query" in operations
    assert "reverse" not in operations
    _settled(session, merchant, "wechat", 600)


def test_wechat_userpaying_past_the_deadline_is_reversed(
    live_app, live_terminal, session, merchant, fast_poll
):
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 600)

    status, answer = live_terminal.pay(600, code=_code(live_app, "wechat"))

    assert (answer["state"], answer["failure_code"]) == ("reversed", "reversed")
    assert _calls(session, answer["out_trade_no"])[-1] == ("reverse", "ok")
    _settled(session, merchant, "wechat", 0)


def test_a_timeout_is_queried_and_reported_paid(
    live_app, live_terminal, session, merchant, fast_poll
):
    # Alipay acts on the payment and then drops the connection: our call times
    # out, and only the query can tell that the money moved.
    live_app.sandbox.faults.set("alipay", "no_answer", "after")
    fast_poll.append(lambda now: live_app.sandbox.faults.clear())

    status, answer = live_terminal.pay(450, code=_code(live_app, "alipay"))

    assert answer["state"] == "succeeded"
    assert _calls(session, answer["out_trade_no"])[:2] == [
        ("pay_with_code", "unavailable"),
        ("query", "ok"),
    ]
    _settled(session, merchant, "alipay", 450)


def test_a_5xx_is_never_reported_failed(
    live_app, live_terminal, session, merchant, fast_poll
):
    # Every call meets a proxy's 502 until the deadline has passed: the outcome
    # stays unknown, and only the job's query, once the channel answers, ends it.
    live_app.sandbox.faults.set("wechat", "http_status", 502)
    order_no = new_order_no()

    status, answer = live_terminal.pay(450, order_no, code=_code(live_app, "wechat"))
    asked_status, asked = live_terminal.query(order_no)

    assert (status, answer["state"], answer["failure_code"]) == (202, "paying", None)
    assert (asked_status, asked["state"]) == (202, "paying")
    unknown = _calls(session, answer["out_trade_no"])
    assert {outcome for _, outcome in unknown} == {"unavailable"}
    assert {operation for operation, _ in unknown} == {
        "pay_with_code",
        "query",
        "reverse",
    }
    session.rollback()
    assert session.scalars(select(PosPayment.state)).one().value == "paying"

    live_app.sandbox.faults.clear()
    later = live_app.sandbox.clock.advance(600)
    report = in_app(live_app, lambda: resolve_stale(now=later))

    session.rollback()
    proof = session.scalars(
        select(ChannelCall)
        .where(ChannelCall.out_trade_no == answer["out_trade_no"])
        .order_by(ChannelCall.id)
    ).all()[len(unknown)]
    # The first answer the channel gives: it never had the order, so no money
    # moved; only then is the payment ended (reversed, to be sure).
    assert (proof.operation, proof.outcome) == ("query", "ok")
    assert "ORDER_NOT_EXIST" in proof.response
    assert (report.reversed, report.failed, report.unknown) == (1, 0, 0)
    assert live_terminal.query(order_no)[1]["state"] == "reversed"
    _settled(session, merchant, "wechat", 0)


def test_a_5xx_while_the_payer_enters_the_password_is_paid_once_queried(
    live_app, live_terminal, session, merchant, fast_poll
):
    # WeChat has the order (USERPAYING) when the proxy starts answering 502; the
    # payer finishes meanwhile. The first query that gets through finds it paid.
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 10)
    started = live_app.sandbox.clock.now()

    def proxy_down_for_a_while(now):
        if (now - started).total_seconds() < 20:
            live_app.sandbox.faults.set("wechat", "http_status", 502)
        else:
            live_app.sandbox.faults.clear()

    fast_poll.append(proxy_down_for_a_while)

    status, answer = live_terminal.pay(380, code=_code(live_app, "wechat"))

    assert (status, answer["state"]) == (200, "succeeded")
    calls = _calls(session, answer["out_trade_no"])
    assert calls[0] == ("pay_with_code", "ok")
    assert ("query", "unavailable") in calls
    assert calls[-1] == ("query", "ok")
    assert "reverse" not in {operation for operation, _ in calls}
    _settled(session, merchant, "wechat", 380)


def _past_the_deadline(now) -> bool:  # type: ignore[no-untyped-def]
    """Whether the one payment's polling deadline has come (read in a session
    of its own, as the pause it is asked from runs inside the payment)."""
    reader = db.new_session()
    try:
        return now >= reader.scalar(select(PosPayment.deadline_at))
    finally:
        reader.close()


def test_alipay_10003_past_the_deadline_is_cancelled_obeying_retry_flag(
    live_app, live_terminal, session, merchant, fast_poll
):
    live_app.sandbox.faults.set("alipay", "user_paying_seconds", 600)
    armed = []

    def cancel_asks_to_retry(now):
        # The pause that reaches the payment's deadline is the last before the
        # cancel: from there the first cancel answers ACQ.SYSTEM_ERROR with
        # retry_flag Y, and the next pause lifts the fault.
        if armed:
            live_app.sandbox.faults.clear()
            return
        if _past_the_deadline(now):
            live_app.sandbox.faults.set("alipay", "server_error", "ACQ")
            armed.append(now)

    fast_poll.append(cancel_asks_to_retry)

    status, answer = live_terminal.pay(700, code=_code(live_app, "alipay"))

    assert answer["state"] == "reversed"
    calls = _calls(session, answer["out_trade_no"])
    reverses = [outcome for operation, outcome in calls if operation == "reverse"]
    assert len(reverses) == 2
    retried = session.scalars(
        select(ChannelCall)
        .where(ChannelCall.operation == "reverse")
        .order_by(ChannelCall.id)
    ).first()
    assert '"retry_flag": "Y"' in retried.response
    _settled(session, merchant, "alipay", 0)


def test_alipay_cancel_told_not_to_retry_is_not_repeated_but_queried(
    live_app, live_terminal, session, merchant, fast_poll
):
    live_app.sandbox.faults.set("alipay", "user_paying_seconds", 600)

    def cancel_says_no_retry(now):
        if _past_the_deadline(now):
            live_app.sandbox.faults.set("alipay", "server_error", "ACQ_no_retry")

    fast_poll.append(cancel_says_no_retry)

    status, answer = live_terminal.pay(700, code=_code(live_app, "alipay"))

    # One cancel (ACQ.SYSTEM_ERROR, retry_flag N), then the payment is asked
    # about instead: still waiting for the payer, it stays for the job.
    calls = _calls(session, answer["out_trade_no"])
    assert [operation for operation, _ in calls].count("reverse") == 1
    assert calls[-1][0] == "query"
    cancel = session.scalars(
        select(ChannelCall).where(ChannelCall.operation == "reverse")
    ).one()
    assert (cancel.outcome, cancel.error_code) == ("rejected", "ACQ.SYSTEM_ERROR")
    assert answer["state"] != "reversed"
    _settled(session, merchant, "alipay", 0)
    # The stale-payment job asks again later and cancels it then (else the
    # payer's password would complete it under some later test's clock).
    session.rollback()
    live_app.sandbox.faults.clear()
    later = live_app.sandbox.clock.advance(300)
    assert in_app(live_app, lambda: resolve_stale(now=later)).reversed == 1


def test_a_payment_left_paying_by_a_crash_is_settled_by_the_job(
    live_app, live_terminal, session, merchant, fast_poll
):
    class Crash(Exception):
        pass

    def crash(now):
        raise Crash

    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 20)
    fast_poll.append(crash)
    status, answer = live_terminal.pay(330, code=_code(live_app, "wechat"))
    assert status == 500  # the process "died" while waiting for the payer

    later = live_app.sandbox.clock.advance(300)
    report = in_app(live_app, lambda: resolve_stale(now=later))

    assert report.settled == 1
    _settled(session, merchant, "wechat", 330)


def test_query_asks_the_channel_for_a_payment_still_paying(
    live_app, live_terminal, session, merchant, fast_poll
):
    class Crash(Exception):
        pass

    def crash(now):
        raise Crash

    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 5)
    fast_poll.append(crash)
    order_no = new_order_no()
    live_terminal.pay(210, order_no, code=_code(live_app, "wechat"))
    fast_poll.clear()
    live_app.sandbox.clock.advance(10)

    status, answer = live_terminal.query(order_no)

    assert (status, answer["state"]) == (200, "succeeded")
    _settled(session, merchant, "wechat", 210)


def test_a_wechat_read_timeout_is_queried_and_reported_paid(
    live_app, live_terminal, session, merchant, fast_poll
):
    # WeChat carries the payment out and answers too late for our read timeout.
    import dataclasses

    from payments.channels.wechat.channel import WechatChannel
    from payments.channels.wechat.config import WechatConfig

    served = live_app.app
    config = WechatConfig.from_settings(served.extensions["campus.settings"])
    served.extensions.setdefault("campus.channels", {})["wechat"] = WechatChannel(
        dataclasses.replace(config, timeout_seconds=0.3),
        now=live_app.sandbox.clock.now,
    )
    live_app.sandbox.faults.set("wechat", "latency_ms", 1000)
    fast_poll.append(lambda now: live_app.sandbox.faults.clear())

    status, answer = live_terminal.pay(520, code=_code(live_app, "wechat"))

    assert answer["state"] == "succeeded"
    assert _calls(session, answer["out_trade_no"])[0] == (
        "pay_with_code",
        "unavailable",
    )
    _settled(session, merchant, "wechat", 520)


def test_a_qr_order_being_paid_is_left_to_its_payer_for_the_qrs_life(
    live_app, live_terminal, session, merchant
):
    order_no = new_order_no()
    status, opened = live_terminal.send(
        "POST", "/api/terminal/qr-orders", {"order_no": order_no, "amount_fen": 1500}
    )
    token = opened["checkout_url"].rstrip("/").rsplit("/", 1)[1]
    gateway = live_app.sandbox.gateways["wechat"]
    # The payer scanned it in WeChat: the JSAPI order is made at the channel.
    payer = PayerContext(kind=PayerKind.JSAPI, openid=gateway.openid("demo-1"))
    in_app(live_app, lambda: start_qr_payment(token, "wechat", payer))
    created = live_app.sandbox.clock.now()

    # Five minutes on, still typing: the job leaves the order alone.
    soon = in_app(
        live_app, lambda: resolve_stale(now=created + dt.timedelta(minutes=5))
    )
    paying = live_terminal.query(order_no)[1]["state"]
    # Past the QR's life, the job closes it at the channel and fails it.
    late = in_app(
        live_app, lambda: resolve_stale(now=created + dt.timedelta(minutes=16))
    )

    assert (soon.failed, paying) == (0, "paying")
    assert late.failed == 1
    ended = live_terminal.query(order_no)[1]
    assert ended["state"] == "failed"
    session.rollback()
    assert ("close", "ok") in _calls(session, ended["out_trade_no"])
