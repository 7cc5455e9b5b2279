"""Refund lines of a day's bill: a refund whose notification was lost is settled
through the refund's own settle function, and the fee a channel gives back on a
refund is credited to the merchant's statement."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import select

from campus.auth import Role, create_operator
from payments import ledger
from payments.merchants import add_terminal
from payments.pos.models import PosRefund, RefundState
from reconciliation.matching import FindingKind
from reconciliation.models import Discrepancy, DiscrepancyStatus
from reconciliation.run import Phase, reconcile_day
from reconciliation.settlement import ChannelFee, MerchantStatement
from tests.live import in_app
from tests.payments.pos.conftest import SignedTerminal, new_order_no

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A day no other test trades on: the sandbox's bills are shared by the session.
DAY = dt.date(2036, 2, 3)


@pytest.fixture
def till(live_app, session, merchant) -> SignedTerminal:
    terminal = add_terminal(session, merchant, "till")
    session.commit()
    # The poll loop moves the sandbox clock instead of sleeping.
    config = live_app.app.extensions["payments.pos"]
    live_app.app.extensions["payments.pos"] = dataclasses.replace(
        config, sleep=live_app.sandbox.clock.advance
    )
    return SignedTerminal(terminal.key_id, terminal.secret, live_app.app, live_app.url)


def _finance(live_app, session) -> requests.Session:
    session.rollback()
    create_operator(session, "fin", "correct horse battery", [Role.FINANCE])
    session.commit()
    browser = requests.Session()
    browser.post(
        f"{live_app.url}/api/operators/sign-in",
        json={"username": "fin", "password": "correct horse battery"},
        timeout=10,
    ).raise_for_status()
    return browser


def _pay(live_app, till, paid_fen: int) -> str:
    code = live_app.sandbox.gateways["wechat"].current_code("demo-1")
    _, paid = till.pay(paid_fen, new_order_no(), code=code)
    assert paid["state"] == "succeeded", paid
    return paid["out_trade_no"]


def _refund(live_app, browser, out_trade_no: str, refund_fen: int) -> str:
    return browser.post(
        f"{live_app.url}/api/pos/payments/{out_trade_no}/refunds",
        json={"amount_fen": refund_fen},
        timeout=30,
    ).json()["out_refund_no"]


class Killed(Exception):
    pass


def _kill(phase: Phase, done: int, total: int) -> None:
    if phase is Phase.RECORD:
        raise Killed


def test_a_lost_refund_notification_is_repaired_and_refund_fees_are_credited(
    live_app, till, session, merchant
):
    live_app.sandbox.clock.set(dt.datetime.combine(DAY, dt.time(12), SHANGHAI))
    browser = _finance(live_app, session)
    told = _refund(live_app, browser, _pay(live_app, till, 900), 400)
    lost_payment = _pay(live_app, till, 600)
    live_app.sandbox.faults.set("wechat", "notification", "drop", lost_payment)
    lost = _refund(live_app, browser, lost_payment, 200)
    live_app.sandbox.clock.advance(120)  # both refunds go through at the channel
    live_app.sandbox.outbox.deliver_due()
    session.rollback()
    refunds = {r.out_refund_no: r for r in session.scalars(select(PosRefund))}
    assert refunds[told].state is RefundState.SUCCEEDED
    assert refunds[lost].state is RefundState.PROCESSING
    live_app.sandbox.clock.set(
        dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(10), SHANGHAI)
    )
    # The next morning's takings: the payable must hold the day's net when it is
    # paid out, and the repaired refund leaves it before then.
    _pay(live_app, till, 1000)
    live_app.sandbox.clock.advance(35 * 60)
    session.rollback()
    runner = live_app.app.test_cli_runner()

    # The first run dies once its findings are recorded, the repair among them.
    with pytest.raises(Killed):
        in_app(live_app, lambda: reconcile_day("wechat", DAY, progress=_kill))
    live_app.sandbox.clock.advance(3600)  # its lease runs out
    run = in_app(live_app, lambda: reconcile_day("wechat", DAY))
    again = in_app(live_app, lambda: reconcile_day("wechat", DAY))
    settled = in_app(
        live_app,
        lambda: runner.invoke(args=["reconcile", "settle", "--date", DAY.isoformat()]),
    )

    session.rollback()
    item = session.scalars(select(Discrepancy).where(Discrepancy.key == lost)).one()
    assert (item.kind, item.status) == (
        FindingKind.REFUND_MISMATCH.value,
        DiscrepancyStatus.REPAIRED,
    )
    # Two payments and the notified refund; the repaired refund counted as found.
    assert (run.counts["matched"], run.counts["refund_mismatch"]) == (3, 1)
    assert run.counts["repaired"] == 1 and run.attempts == 2 and again.id == run.id
    repaired = session.get(PosRefund, refunds[lost].id)
    assert repaired.state is RefundState.SUCCEEDED
    # Finished when the channel finished it: the next day's run will not find a
    # refund of ours missing from its bill.
    assert repaired.finished_at.astimezone(SHANGHAI).date() == DAY
    fees = dict(
        session.execute(select(ChannelFee.out_trade_no, ChannelFee.fee_fen)).all()
    )
    # 0.6 % rounded half up: 5.4 and 3.6 fen charged, 2.4 and 1.2 fen given
    # back, the repaired refund's as the notified one's.
    assert (fees[told], fees[lost]) == (-2, -1)
    assert settled.exit_code == 0, settled.output
    statement = session.scalars(select(MerchantStatement)).one()
    assert statement.fees_fen == 5 + 4 - 2 - 1
    # The repaired refund left the merchant's payable when it was repaired: it
    # counts in the next day's statement.
    assert statement.refunds_fen == 400
    assert statement.net_fen == 1500 - 400 - 6
    assert ledger.check_ledger(session) == []


def test_a_refund_listed_the_next_day_is_held_then_matched_and_its_fee_booked(
    live_app, till, session, merchant
):
    # Another day than the other test's: the sandbox's bills are shared.
    day = dt.date(2036, 2, 12)
    live_app.sandbox.clock.set(dt.datetime.combine(day, dt.time(12), SHANGHAI))
    browser = _finance(live_app, session)
    paid = _pay(live_app, till, 900)
    refunded = _refund(live_app, browser, paid, 400)
    # The channel lists the refund in the next day's bill; we finished it today.
    live_app.sandbox.faults.set("wechat", "bill", "after_midnight", refunded)
    live_app.sandbox.clock.advance(120)
    live_app.sandbox.outbox.deliver_due()
    next_day = day + dt.timedelta(days=1)

    live_app.sandbox.clock.set(dt.datetime.combine(next_day, dt.time(10, 35), SHANGHAI))
    first = in_app(live_app, lambda: reconcile_day("wechat", day))
    session.rollback()
    held = session.scalars(select(Discrepancy).where(Discrepancy.key == refunded)).one()
    held_as = (held.kind, held.status, held.hold_until)
    live_app.sandbox.clock.set(
        dt.datetime.combine(next_day + dt.timedelta(days=1), dt.time(10, 35), SHANGHAI)
    )
    second = in_app(live_app, lambda: reconcile_day("wechat", next_day))

    session.rollback()
    assert first.counts["matched"] == 1
    assert held_as == (
        FindingKind.REFUND_MISMATCH.value,
        DiscrepancyStatus.HELD,
        day + dt.timedelta(days=3),
    )
    session.refresh(held)
    assert (held.status, held.matched_on) == (DiscrepancyStatus.MATCHED_LATE, next_day)
    assert second.counts["matched_late"] == 1
    # The next day's bill holds the refund alone: 2.4 fen of fee given back,
    # booked the other way round from a day's fees, and credited to the merchant.
    assert second.counts["fees_fen"] == -2
    entry = session.scalars(
        select(ledger.JournalEntry).where(
            ledger.JournalEntry.idempotency_ref == f"fees:wechat:{next_day}"
        )
    ).one()
    movements = {posting.account.code: posting.amount_fen for posting in entry.postings}
    assert sorted(movements.values()) == [-2, 2]
    assert movements[ledger.fees_account(session, "wechat").code] == 2
    fee = session.scalars(
        select(ChannelFee).where(ChannelFee.out_trade_no == refunded)
    ).one()
    assert (fee.day, fee.fee_fen) == (next_day, -2)
