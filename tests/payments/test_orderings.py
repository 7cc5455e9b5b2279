"""Orderings of the money paths that the other tests do not reach.

Each test drives one order of events through the real SDKs, the sandbox gateways
and our HTTP endpoints: a refund's query before its notification, the same refund
notification twice, a refund's failure notification after its success, a refund
notification before our refund is committed, a payment the payer completes while
it is being cancelled, a payment settled by its notification while our queries
fail (not cancelled at the deadline, with and without a refund in between), a
notification with another amount, a refund that never reached the channel (sent
again, by the query or the stale-refund job), and, on PostgreSQL, races: partial
refunds of one channel payment, a refund's query against its notification, a
top-up's query against its notification.

Every test ends with what the money did: balances, journal entries, and a ledger
that proves (``ledger.check_ledger``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from campus.auth import Role, create_operator
from campus.database import db, utcnow
from payments import ledger
from payments.channel_log import NotificationRecord
from payments.channels import channel_for
from payments.channels.base import RefundRequest
from payments.merchants import add_terminal
from payments.notifications import notify_url
from payments.pos import refunds, service
from payments.pos.models import (
    PaymentState,
    PosPayment,
    PosRefund,
    RefundDestination,
    RefundState,
)
from payments.pos.service import lock_payment
from payments.remote_top_up import resolve_stale_top_ups
from payments.topups import TopUpState, find_top_up
from tests.live import in_app, together
from tests.payments.pos.conftest import SignedTerminal, new_order_no

DESKTOP = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"}
PASSWORD = "correct horse battery"
_operators = itertools.count(1)


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture
def till(live_app, session, merchant) -> SignedTerminal:
    """A terminal of ``merchant`` that signs its requests and sends them over HTTP
    to the served app."""
    terminal = add_terminal(session, merchant, "till")
    session.commit()
    return SignedTerminal(terminal.key_id, terminal.secret, live_app.app, live_app.url)


@pytest.fixture
def pauses(live_app) -> list:
    """The served app's poll loop moves the sandbox clock by each pause instead of
    sleeping; the hooks appended here run at each pause with the new time."""
    hooks: list = []

    def sleep(seconds: float) -> None:
        live_app.sandbox.clock.advance(seconds)
        for hook in list(hooks):
            hook(live_app.sandbox.clock.now())

    config = live_app.app.extensions["payments.pos"]
    live_app.app.extensions["payments.pos"] = dataclasses.replace(config, sleep=sleep)
    return hooks


def _finance(live_app, session, desks: int = 1) -> Any:
    """``desks`` browsers signed in as one finance operator (one if 1)."""
    session.rollback()
    username = f"fin{next(_operators)}"
    create_operator(session, username, PASSWORD, [Role.FINANCE])
    session.commit()
    browsers = []
    for _ in range(desks):
        browser = requests.Session()
        browser.post(
            f"{live_app.url}/api/operators/sign-in",
            json={"username": username, "password": PASSWORD},
            timeout=10,
        ).raise_for_status()
        browsers.append(browser)
    return browsers[0] if desks == 1 else browsers


def _refund(live_app, browser, out_trade_no: str, amount_fen: int):
    return browser.post(
        f"{live_app.url}/api/pos/payments/{out_trade_no}/refunds",
        json={"amount_fen": amount_fen},
        timeout=30,
    )


def _ask_refund(live_app, browser, out_refund_no: str) -> dict:
    answer = browser.get(f"{live_app.url}/api/pos/refunds/{out_refund_no}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _pay_wechat(live_app, till, amount_fen: int) -> dict:
    code = live_app.sandbox.gateways["wechat"].current_code("demo-1")
    status, answer = till.pay(amount_fen, new_order_no(), code=code)
    assert (status, answer["state"]) == (200, "succeeded"), answer
    return answer


def _pay_alipay(live_app, till, amount_fen: int) -> dict:
    code = live_app.sandbox.gateways["alipay"].current_code("demo-1")
    _, answer = till.pay(amount_fen, new_order_no(), code=code)
    return answer


def _outcomes(session, out_trade_no: str) -> list[str]:
    """What we made of each notification about the order, in arrival order."""
    session.rollback()
    return list(
        session.scalars(
            select(NotificationRecord.outcome)
            .where(NotificationRecord.out_trade_no == out_trade_no)
            .order_by(NotificationRecord.id)
        )
    )


def _entries(session, out_trade_no: str) -> list[tuple[str, str]]:
    """The journal entries of an order: ``(kind, idempotency_ref)`` in order."""
    session.rollback()
    return [
        (kind.value, reference)
        for kind, reference in session.execute(
            select(ledger.JournalEntry.kind, ledger.JournalEntry.idempotency_ref)
            .where(ledger.JournalEntry.order_ref == out_trade_no)
            .order_by(ledger.JournalEntry.id)
        )
    ]


def _books(session, merchant, channel: str) -> tuple[int, int]:
    """(the merchant's payable, the channel's clearing) as the ledger has them."""
    session.rollback()
    return (
        merchant.payable.balance_fen,
        ledger.clearing_account(session, channel).balance_fen,
    )


def _payment(session, out_trade_no: str) -> PosPayment:
    session.rollback()
    return session.scalars(
        select(PosPayment).where(PosPayment.out_trade_no == out_trade_no)
    ).one()


def _refund_row(session, out_refund_no: str) -> PosRefund:
    session.rollback()
    return session.scalars(
        select(PosRefund).where(PosRefund.out_refund_no == out_refund_no)
    ).one()


def _latest_payment(column):
    """A column of the latest payment, read in a session of its own: a hook runs
    in the served app's request thread, whose session is the poll loop's."""
    reader = db.new_session()
    try:
        return reader.scalar(select(column).order_by(PosPayment.id.desc()))
    finally:
        reader.close()


def _deadline() -> dt.datetime | None:
    return _latest_payment(PosPayment.deadline_at)


def _alipay_payer_balance(live_app) -> int:
    payers = live_app.sandbox.gateways["alipay"].payers()
    return next(p["balance_fen"] for p in payers if p["id"] == "demo-1")


def _wechat_refund_notice(live_app, refund: dict, paid: dict, status: str) -> None:
    """Have the sandbox's WeChat Pay send a refund notification of ``status``
    (``ABNORMAL``, ``CLOSED``) for ``refund``, signed and sealed as it sends its own,
    on its retry schedule."""
    gateway = live_app.sandbox.gateways["wechat"]
    gateway.notifier.send(
        out_trade_no=paid["out_trade_no"],
        url=f"{live_app.url}/notify/wechat",
        event_type=f"REFUND.{status}",
        summary="退款异常" if status == "ABNORMAL" else "退款关闭",
        original_type="refund",
        resource={
            "mchid": gateway.keys.mchid,
            "out_trade_no": paid["out_trade_no"],
            "transaction_id": paid["transaction_id"],
            "out_refund_no": refund["out_refund_no"],
            "refund_id": refund["refund_id"],
            "refund_status": status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": paid["amount_fen"],
                "refund": refund["amount_fen"],
                "payer_total": paid["amount_fen"],
                "payer_refund": refund["amount_fen"],
            },
        },
    )


# -- a channel refund: its query, its notification, twice, and its failure ----------


def test_a_refund_settled_by_its_query_is_not_posted_again_by_its_notification(
    live_app, till, session, merchant
):
    paid = _pay_wechat(live_app, till, 900)
    finance = _finance(live_app, session)
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()
    assert opened["state"] == "processing"  # WeChat refunds take a few seconds

    live_app.sandbox.clock.advance(6)
    asked = _ask_refund(live_app, finance, opened["out_refund_no"])
    delivered = live_app.sandbox.outbox.deliver_due()

    assert asked["state"] == "succeeded"
    assert delivered == 1  # acknowledged, so WeChat Pay stops sending it
    assert _outcomes(session, paid["out_trade_no"]) == ["accepted"]
    assert _entries(session, paid["out_trade_no"]) == [
        ("payment", f"pos:{paid['out_trade_no']}"),
        ("refund", f"pos_refund:{opened['out_refund_no']}"),
    ]
    assert _books(session, merchant, "wechat") == (500, -500)
    assert _payment(session, paid["out_trade_no"]).refunded_fen == 400
    assert ledger.check_ledger(session) == []


def test_a_refund_notification_sent_twice_posts_the_refund_once(
    live_app, till, session, merchant
):
    paid = _pay_wechat(live_app, till, 900)
    live_app.sandbox.faults.set(
        "wechat", "notification", "duplicate", paid["out_trade_no"]
    )
    finance = _finance(live_app, session)
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()

    live_app.sandbox.clock.advance(6)
    delivered = live_app.sandbox.outbox.deliver_due()
    asked = _ask_refund(live_app, finance, opened["out_refund_no"])

    assert delivered == 2  # both copies acknowledged
    assert asked["state"] == "succeeded"
    assert _outcomes(session, paid["out_trade_no"]) == ["accepted", "duplicate"]
    assert _entries(session, paid["out_trade_no"]) == [
        ("payment", f"pos:{paid['out_trade_no']}"),
        ("refund", f"pos_refund:{opened['out_refund_no']}"),
    ]
    assert _books(session, merchant, "wechat") == (500, -500)
    assert ledger.check_ledger(session) == []


@pytest.mark.parametrize("status", ["ABNORMAL", "CLOSED"])
def test_a_refund_failure_notified_after_its_success_frees_nothing(
    live_app, till, session, merchant, status
):
    paid = _pay_wechat(live_app, till, 900)
    finance = _finance(live_app, session)
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()
    live_app.sandbox.clock.advance(6)
    live_app.sandbox.outbox.deliver_due()
    settled = _ask_refund(live_app, finance, opened["out_refund_no"])
    assert settled["state"] == "succeeded"

    _wechat_refund_notice(live_app, settled, paid, status)
    delivered = live_app.sandbox.outbox.deliver_due()
    beyond = _refund(live_app, finance, paid["out_trade_no"], 501)

    assert delivered == 1  # genuine, so acknowledged; but it changes nothing
    refund = _refund_row(session, opened["out_refund_no"])
    assert (refund.state, refund.failure) == (RefundState.SUCCEEDED, None)
    assert _payment(session, paid["out_trade_no"]).refunded_fen == 400
    # The 400 stays taken: no more than the 500 left can be refunded.
    assert (beyond.status_code, beyond.json()["refundable_fen"]) == (409, 500)
    assert _entries(session, paid["out_trade_no"])[1:] == [
        ("refund", f"pos_refund:{opened['out_refund_no']}")
    ]
    assert _books(session, merchant, "wechat") == (500, -500)
    assert ledger.check_ledger(session) == []


def test_a_refund_wechat_calls_abnormal_stays_reserved_and_goes_to_finance(
    live_app, till, session, merchant
):
    # The money left the merchant's account but could not reach the payer: it
    # is finished by hand in WeChat Pay's merchant platform, so it may not be
    # freed for a second refund, nor booked as given back.
    paid = _pay_wechat(live_app, till, 900)
    finance = _finance(live_app, session)
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()
    assert opened["state"] == "processing"

    _wechat_refund_notice(
        live_app, {**opened, "refund_id": "50300000000000000001"}, paid, "ABNORMAL"
    )
    delivered = live_app.sandbox.outbox.deliver_due()
    beyond = _refund(live_app, finance, paid["out_trade_no"], 501)

    assert delivered == 1
    assert _outcomes(session, paid["out_trade_no"]) == ["flagged"]
    assert _refund_row(session, opened["out_refund_no"]).state is (
        RefundState.PROCESSING
    )
    payment = _payment(session, paid["out_trade_no"])
    assert payment.refunded_fen == 400 and payment.needs_review
    assert "abnormal" in payment.review_reason
    assert (beyond.status_code, beyond.json()["refundable_fen"]) == (409, 500)
    assert _entries(session, paid["out_trade_no"]) == [
        ("payment", f"pos:{paid['out_trade_no']}")
    ]
    assert _books(session, merchant, "wechat") == (900, -900)
    assert ledger.check_ledger(session) == []


def test_a_refund_notification_with_another_amount_settles_nothing(
    live_app, till, session, merchant
):
    paid = _pay_wechat(live_app, till, 900)
    live_app.sandbox.faults.set(
        "wechat", "notification", "amount", paid["out_trade_no"]
    )
    finance = _finance(live_app, session)
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()

    live_app.sandbox.clock.advance(6)
    delivered = live_app.sandbox.outbox.deliver_due()

    # Genuine, so acknowledged; but WeChat Pay says 401 fen went back for a
    # refund of 400: not ours to settle by ourselves.
    assert delivered == 1
    assert _outcomes(session, paid["out_trade_no"]) == ["flagged"]
    assert _refund_row(session, opened["out_refund_no"]).state is not (
        RefundState.SUCCEEDED
    )
    assert _entries(session, paid["out_trade_no"]) == [
        ("payment", f"pos:{paid['out_trade_no']}")
    ]
    assert _books(session, merchant, "wechat") == (900, -900)
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
def test_a_refund_notification_before_our_refund_is_committed_is_refused_then_settles(
    live_app, till, session, merchant
):
    """Our refund's transaction has not committed when WeChat Pay's notification
    arrives: refused with the retry answer, not acknowledged and lost; WeChat Pay's
    retry after the commit settles it once."""
    paid = _pay_wechat(live_app, till, 900)
    number = "R" + uuid.uuid4().hex[:20]
    writer = db.new_session()
    try:
        payment = lock_payment(writer, paid["out_trade_no"])
        payment.refunded_fen += 400
        writer.add(
            PosRefund(
                out_refund_no=number,
                payment_id=payment.id,
                amount_fen=400,
                destination=RefundDestination.ORIGINAL,
                channel="wechat",
                state=RefundState.PROCESSING,
                operator="fin",
            )
        )
        writer.flush()  # written, not committed
        asked = in_app(
            live_app,
            lambda: channel_for("wechat").refund(
                RefundRequest(
                    out_trade_no=paid["out_trade_no"],
                    out_refund_no=number,
                    refund_fen=400,
                    total_fen=900,
                    notify_url=notify_url("wechat"),
                )
            ),
        )
        live_app.sandbox.clock.advance(6)
        early = live_app.sandbox.outbox.deliver_due()
        writer.commit()
    finally:
        writer.close()
    [delivery] = [
        d
        for d in live_app.sandbox.outbox.all()
        if d.out_trade_no == paid["out_trade_no"]
    ]
    live_app.sandbox.clock.advance(16)  # WeChat Pay's first retry, 15 s later
    retried = live_app.sandbox.outbox.deliver_due()

    assert asked.state.value == "processing"
    assert (early, retried) == (0, 1)
    assert delivery.attempts[0]["status"] >= 500  # "send it again"
    assert _outcomes(session, paid["out_trade_no"]) == ["refused", "accepted"]
    refund = _refund_row(session, number)
    assert refund.state is RefundState.SUCCEEDED
    assert _entries(session, paid["out_trade_no"])[1:] == [
        ("refund", f"pos_refund:{number}")
    ]
    assert _books(session, merchant, "wechat") == (500, -500)
    assert ledger.check_ledger(session) == []


def test_a_refund_that_never_reached_the_channel_does_not_stay_processing(
    live_app, till, session, merchant
):
    paid = _pay_alipay(live_app, till, 900)
    assert paid["state"] == "succeeded"
    finance = _finance(live_app, session)
    live_app.sandbox.faults.set("alipay", "no_answer", "before")
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()
    assert opened["state"] == "processing"  # unknown: the connection dropped
    live_app.sandbox.faults.clear()

    asked = [_ask_refund(live_app, finance, opened["out_refund_no"])]
    asked.append(_ask_refund(live_app, finance, opened["out_refund_no"]))

    trade = live_app.sandbox.gateways["alipay"].trade(paid["out_trade_no"])
    # Asked about twice once the channel answers again, the refund is over, and
    # our books say what the channel did.
    assert asked[-1]["state"] in {"succeeded", "failed"}
    refunded_here = 400 if asked[-1]["state"] == "succeeded" else 0
    assert trade["refunded_fen"] == refunded_here
    assert _payment(session, paid["out_trade_no"]).refunded_fen == refunded_here
    net = 900 - refunded_here
    assert _books(session, merchant, "alipay") == (net, -net)
    assert ledger.check_ledger(session) == []


def test_the_stale_refund_job_sends_again_a_refund_the_channel_never_got(
    live_app, till, session, merchant
):
    paid = _pay_alipay(live_app, till, 900)
    finance = _finance(live_app, session)
    live_app.sandbox.faults.set("alipay", "no_answer", "before")
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()
    live_app.sandbox.faults.clear()
    later = utcnow() + dt.timedelta(minutes=5)

    early = in_app(live_app, lambda: refunds.resolve_stale_refunds())
    finished = in_app(live_app, lambda: refunds.resolve_stale_refunds(now=later))
    again = in_app(live_app, lambda: refunds.resolve_stale_refunds(now=later))

    assert (early, finished, again) == (0, 1, 0)
    assert _refund_row(session, opened["out_refund_no"]).state is (
        RefundState.SUCCEEDED
    )
    trade = live_app.sandbox.gateways["alipay"].trade(paid["out_trade_no"])
    assert trade["refunded_fen"] == 400
    assert _books(session, merchant, "alipay") == (500, -500)
    assert ledger.check_ledger(session) == []


# -- a code payment, its notification, and the cancel at the deadline ---------------


def test_a_payment_paid_during_its_cancel_goes_back_and_its_notification_posts_nothing(
    live_app, till, pauses, session, merchant
):
    """The payer finishes entering the password just as the cancel at the deadline
    is repeated: Alipay takes the money and gives it back (action ``refund``), and
    the payment notification it sent meanwhile arrives for a reversed payment."""
    alipay = live_app.sandbox.gateways["alipay"]
    alipay.set_password_needed("demo-1", 600)
    before = _alipay_payer_balance(live_app)
    past_deadline: list[dt.datetime] = []

    def payer_finishes_between_two_cancels(now: dt.datetime) -> None:
        deadline = _deadline()
        if deadline is None or now < deadline:
            return
        past_deadline.append(now)
        if len(past_deadline) == 1:
            # The last query, then the first cancel, meet a system error; the
            # cancel asks to be repeated.
            live_app.sandbox.faults.set("alipay", "server_error", "ACQ")
        elif len(past_deadline) == 2:
            live_app.sandbox.faults.clear()
            live_app.sandbox.clock.advance(600)  # the password is in

    pauses.append(payer_finishes_between_two_cancels)

    answer = _pay_alipay(live_app, till, 900)
    pauses.clear()
    delivered = live_app.sandbox.outbox.deliver_due()

    number = answer["out_trade_no"]
    trade = alipay.trade(number)
    assert answer["state"] == "reversed"
    assert (trade["status"], trade["refunded_fen"]) == ("TRADE_CLOSED", 900)
    assert _alipay_payer_balance(live_app) == before  # the money went back
    assert delivered == 1  # acknowledged, so Alipay stops sending it
    assert _outcomes(session, number) == ["flagged"]
    payment = _payment(session, number)
    assert payment.state is PaymentState.REVERSED
    assert payment.needs_review and "reversed" in payment.review_reason
    assert _entries(session, number) == []
    assert _books(session, merchant, "alipay") == (0, 0)
    assert ledger.check_ledger(session) == []


def _settled_by_notification_then_cancelled(
    live_app, till, pauses, session, refund_fen: int
) -> tuple[dict, list[dict]]:
    """An Alipay code payment whose queries fail (502) for the whole wait: the
    payer pays, the notification settles it, finance refunds ``refund_fen`` of it
    (if any), and at the deadline the cancel goes through. The terminal's answer
    and the refunds' answers."""
    alipay = live_app.sandbox.gateways["alipay"]
    alipay.set_password_needed("demo-1", 5)
    finance = _finance(live_app, session)
    faults = live_app.sandbox.faults
    pauses_seen: list[dt.datetime] = []
    past_deadline: list[dt.datetime] = []
    refunded: list[dict] = []
    notified: list[int] = []

    def meanwhile(now: dt.datetime) -> None:
        pauses_seen.append(now)
        deadline = _deadline()
        if deadline is None:
            return
        if len(pauses_seen) == 1:
            faults.set("alipay", "server_error", "5xx")  # our queries fail
        elif len(pauses_seen) == 2:
            # The password is in: Alipay takes the money and notifies us, and we
            # settle from the notification while our queries still fail.
            faults.clear()
            alipay.advance()
            notified.append(live_app.sandbox.outbox.deliver_due())
            if refund_fen:
                number = _latest_payment(PosPayment.out_trade_no)
                refunded.append(_refund(live_app, finance, number, refund_fen).json())
                notified.append(live_app.sandbox.outbox.deliver_due())
            faults.set("alipay", "server_error", "5xx")
        elif now >= deadline:
            past_deadline.append(now)
            if len(past_deadline) == 2:
                # The last query and the first cancel failed; the second cancel
                # reaches Alipay.
                faults.clear()

    pauses.append(meanwhile)
    answer = _pay_alipay(live_app, till, 900)
    pauses.clear()
    # The payment's notification, then the refund's, each acknowledged.
    assert notified == ([1, 1] if refund_fen else [1])
    assert _outcomes(session, answer["out_trade_no"]) == ["accepted"] * len(notified)
    return answer, refunded


def _alipay_net(live_app, out_trade_no: str) -> int:
    """What Alipay keeps of the payer's money for this trade."""
    trade = live_app.sandbox.gateways["alipay"].trade(out_trade_no)
    paid = trade["total_fen"] if trade["buyer_id"] else 0
    return paid - trade["refunded_fen"]


def test_a_payment_a_notification_settled_while_queries_failed_is_not_cancelled(
    live_app, till, pauses, session, merchant
):
    answer, _ = _settled_by_notification_then_cancelled(
        live_app, till, pauses, session, refund_fen=0
    )

    number = answer["out_trade_no"]
    # The payer paid: the cashier is told so, and nothing is sent back.
    assert answer["state"] == "succeeded"
    assert _alipay_net(live_app, number) == 900
    assert not _payment(session, number).needs_review
    assert _entries(session, number) == [("payment", f"pos:{number}")]
    assert _books(session, merchant, "alipay") == (900, -900)
    assert ledger.check_ledger(session) == []


def test_a_settled_payment_the_channel_reports_reversed_undoes_only_what_was_left(
    live_app, till, session, merchant
):
    # Should a reverse reach the channel after all (the notification landing in
    # the instant before it), the channel gives back what it still held: the
    # amount less the refunds it had made.
    paid = _pay_alipay(live_app, till, 900)
    finance = _finance(live_app, session)
    refund = _refund(live_app, finance, paid["out_trade_no"], 300).json()
    assert refund["state"] == "succeeded"
    number = paid["out_trade_no"]

    service._finish(number, PaymentState.REVERSED, "reversed", "")

    payment = _payment(session, number)
    assert payment.state is PaymentState.REVERSED and payment.needs_review
    assert _entries(session, number) == [
        ("payment", f"pos:{number}"),
        ("refund", f"pos_refund:{refund['out_refund_no']}"),
        ("reversal", f"reversal:pos:{number}"),
    ]
    assert _books(session, merchant, "alipay") == (0, 0)
    assert ledger.check_ledger(session) == []


def test_a_partly_refunded_payment_cancelled_at_the_deadline_books_what_alipay_did(
    live_app, till, pauses, session, merchant
):
    answer, refunded = _settled_by_notification_then_cancelled(
        live_app, till, pauses, session, refund_fen=300
    )

    number = answer["out_trade_no"]
    assert [refund["state"] for refund in refunded] == ["succeeded"]
    net = _alipay_net(live_app, number)
    # Whatever the payment ends as, our books hold what Alipay holds.
    assert _books(session, merchant, "alipay") == (net, -net)
    assert ledger.check_ledger(session) == []


def test_a_payment_notification_with_another_amount_is_flagged_and_the_query_settles(
    live_app, till, pauses, session, merchant
):
    alipay = live_app.sandbox.gateways["alipay"]
    alipay.set_password_needed("demo-1", 5)
    live_app.sandbox.faults.set("alipay", "notification", "different_amount")
    flagged: list[int] = []

    def notified_before_the_next_query(now: dt.datetime) -> None:
        if not flagged:
            alipay.advance()  # once the password is in: paid, and notified
            if delivered := live_app.sandbox.outbox.deliver_due():
                flagged.append(delivered)

    pauses.append(notified_before_the_next_query)
    answer = _pay_alipay(live_app, till, 900)
    pauses.clear()

    number = answer["out_trade_no"]
    assert answer["state"] == "succeeded"  # from the query, at 9.00
    assert flagged == [1]  # genuine, so acknowledged, but not settled from
    assert _outcomes(session, number) == ["flagged"]
    payment = _payment(session, number)
    assert payment.needs_review and "1000" in payment.review_reason
    assert _entries(session, number) == [("payment", f"pos:{number}")]
    assert _books(session, merchant, "alipay") == (900, -900)
    assert ledger.check_ledger(session) == []


def test_a_late_payment_notification_after_a_refund_changes_nothing(
    live_app, till, session, merchant
):
    live_app.sandbox.faults.set("alipay", "notification_delay_s", 600)
    paid = _pay_alipay(live_app, till, 900)
    assert paid["state"] == "succeeded"
    finance = _finance(live_app, session)
    refund = _refund(live_app, finance, paid["out_trade_no"], 300).json()
    assert refund["state"] == "succeeded"  # Alipay refunds at once

    live_app.sandbox.clock.advance(601)
    delivered = live_app.sandbox.outbox.deliver_due()

    number = paid["out_trade_no"]
    assert delivered == 2  # the payment's, then the refund's
    assert _outcomes(session, number) == ["accepted", "accepted"]
    payment = _payment(session, number)
    assert (payment.state, payment.refunded_fen) == (PaymentState.SUCCEEDED, 300)
    assert not payment.needs_review
    assert _entries(session, number) == [
        ("payment", f"pos:{number}"),
        ("refund", f"pos_refund:{refund['out_refund_no']}"),
    ]
    assert _books(session, merchant, "alipay") == (600, -600)
    assert ledger.check_ledger(session) == []


# -- races, on PostgreSQL ----------------------------------------------------------


@pytest.mark.postgres
def test_partial_refunds_of_a_channel_payment_racing_never_pass_the_amount_paid(
    live_app, till, session, merchant
):
    paid = _pay_wechat(live_app, till, 900)
    desks = _finance(live_app, session, desks=3)
    number = paid["out_trade_no"]

    answers = together(
        *[lambda desk=desk: _refund(live_app, desk, number, 400) for desk in desks]
    )
    live_app.sandbox.clock.advance(6)
    live_app.sandbox.outbox.deliver_due()

    assert sorted(answer.status_code for answer in answers) == [201, 201, 409]
    refused = next(answer.json() for answer in answers if answer.status_code == 409)
    assert (refused["code"], refused["refundable_fen"]) == ("refund_refused", 100)
    made = [answer.json()["out_refund_no"] for answer in answers if answer.ok]
    session.rollback()
    assert _payment(session, number).refunded_fen == 800
    states = [_refund_row(session, refund).state for refund in made]
    assert states == [RefundState.SUCCEEDED, RefundState.SUCCEEDED]
    assert len(_entries(session, number)) == 3
    assert _books(session, merchant, "wechat") == (100, -100)
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
def test_a_refunds_query_and_its_notification_at_the_same_moment_post_it_once(
    live_app, till, session, merchant
):
    live_app.sandbox.faults.set("wechat", "notification", "delay")
    live_app.sandbox.faults.set("wechat", "notification_delay_seconds", 3600)
    paid = _pay_wechat(live_app, till, 900)
    finance = _finance(live_app, session)
    opened = _refund(live_app, finance, paid["out_trade_no"], 400).json()
    live_app.sandbox.clock.advance(6)  # succeeded at WeChat Pay, not yet notified
    # The refund's is the trade's latest notification (an earlier test's, or the
    # payment's own, may still wait in the outbox).
    delivery = [
        waiting
        for waiting in live_app.sandbox.outbox.pending("wechat")
        if waiting.out_trade_no == paid["out_trade_no"]
    ][-1]
    headers = dict(delivery.headers.items())

    asked, notified = together(
        lambda: _ask_refund(live_app, finance, opened["out_refund_no"]),
        lambda: requests.post(
            delivery.url, data=delivery.body, headers=headers, timeout=30
        ),
    )

    assert asked["state"] == "succeeded"
    assert 200 <= notified.status_code < 300
    assert _outcomes(session, paid["out_trade_no"]) == ["accepted"]
    assert _entries(session, paid["out_trade_no"])[1:] == [
        ("refund", f"pos_refund:{opened['out_refund_no']}")
    ]
    assert _books(session, merchant, "wechat") == (500, -500)
    assert ledger.check_ledger(session) == []


def _open_top_up_paid_not_notified(live_app, browser, card) -> tuple[str, Any]:
    """A WeChat top-up of 50 yuan paid by the payer, its notification held back:
    (its number, the delivery)."""
    live_app.sandbox.faults.set("wechat", "notification", "delay")
    live_app.sandbox.faults.set("wechat", "notification_delay_seconds", 3600)
    created = browser.post(
        f"{live_app.url}/api/top-ups",
        json={
            "amount": "50",
            "channel": "wechat",
            "payer_kind": "native",
            "card": card.number,
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    cashier = browser.post(
        f"{live_app.url}/sandbox/scan", data={"code_url": created.json()["qr_content"]}
    )
    confirmed = browser.post(cashier.url, data={"payer": "demo-1", "action": "confirm"})
    assert confirmed.status_code == 200
    number = created.json()["out_trade_no"]
    [delivery] = [
        d for d in live_app.sandbox.outbox.pending("wechat") if d.out_trade_no == number
    ]
    return number, delivery


@pytest.mark.postgres
@pytest.mark.parametrize("asker", ["result_page", "query_job"])
def test_a_top_ups_query_and_its_notification_at_the_same_moment_credit_once(
    live_app, student_browser, session, asker
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number, delivery = _open_top_up_paid_not_notified(live_app, browser, card)
    headers = dict(delivery.headers.items())
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3)

    def query():
        if asker == "result_page":
            answer = browser.get(f"{live_app.url}/api/top-ups/{number}", timeout=30)
            return answer.json()["state"]
        report = in_app(live_app, lambda: resolve_stale_top_ups(now=later))
        return report.settled

    queried, notified = together(
        query,
        lambda: requests.post(
            delivery.url, data=delivery.body, headers=headers, timeout=30
        ),
    )

    # The page reads the paid top-up either way; the job settles it (1) unless
    # the notification did first, and then finds nothing still paying (0).
    assert queried in {"succeeded", 1, 0}
    assert 200 <= notified.status_code < 300
    session.rollback()
    assert find_top_up(session, number).state is TopUpState.SUCCEEDED
    assert card.wallet.balance_fen == 1000 + 5000
    assert _entries(session, number) == [("top_up", f"top_up:{number}")]
    assert (
        session.scalar(
            select(func.count())
            .select_from(NotificationRecord)
            .where(NotificationRecord.out_trade_no == number)
        )
        == 1
    )
    assert ledger.check_ledger(session) == []
