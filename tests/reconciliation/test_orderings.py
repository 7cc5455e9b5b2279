"""Orderings of reconciliation, notifications, finance and settlement that the
other reconciliation tests do not cover: each runs the real service against the
real sandbox (its bills, its notifications) and checks that no fen is lost or
counted twice, and that every discrepancy ends in the state it should.

Covered elsewhere and not repeated here: a repair then a late notification
(``test_reconcile_day``), a run killed half way (``test_reconcile_day``,
``test_refund_lines``), settlement run twice and refunds after a payout
(``test_settlement``), a day caught up by the next night (``test_nightly``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from campus.database import db
from payments import ledger
from payments.channels import channel_for
from payments.merchants import find_merchant
from payments.topups import TopUpState, find_top_up
from payments.wallet import pay_from_wallet
from reconciliation.models import Discrepancy, DiscrepancyStatus, RunState
from reconciliation.resolution import Decision, resolve
from reconciliation.run import (
    BillRejected,
    Phase,
    RunInProgress,
    day_bounds,
    reconcile_day,
)
from reconciliation.settlement import MerchantStatement, settle_merchants
from tests.live import in_app, together
from tests.payments.test_notifications import DESKTOP, _open_and_pay

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Days no other test trades on: the sandbox's bills are shared by the session.
_days = itertools.count(1)


@pytest.fixture
def trading_day(live_app) -> dt.date:
    day = dt.date(2038, 1, 1) + dt.timedelta(days=next(_days) * 10)
    live_app.sandbox.clock.set(dt.datetime.combine(day, dt.time(12), SHANGHAI))
    return day


@pytest.fixture
def shopper(live_app, student_browser):
    student_browser.browser = student_browser(DESKTOP)
    return student_browser


def _after_bills_are_ready(live_app, day: dt.date) -> None:
    live_app.sandbox.clock.set(
        dt.datetime.combine(day + dt.timedelta(days=1), dt.time(10, 30), SHANGHAI)
    )


def _reconcile(live_app, day, channel="wechat", **options):
    return in_app(live_app, lambda: reconcile_day(channel, day, **options))


def _pay(live_app, shopper, amount="50") -> str:
    return _open_and_pay(live_app, shopper.browser, shopper.card, amount)


def _pay_alipay(live_app, shopper, amount="20") -> str:
    browser = shopper.browser
    result = browser.post(
        f"{live_app.url}/card/top-up",
        data={"card": shopper.card.number, "amount": amount, "channel": "alipay"},
    )
    number = result.url.rstrip("/").rsplit("/", 1)[-1]
    qr = browser.get(f"{live_app.url}/api/top-ups/{number}", timeout=10).json()[
        "qr_content"
    ]
    pay_page = browser.get(qr)
    browser.post(pay_page.url, data={"payer_id": "demo-1", "action": "confirm"})
    return number


def _item(session, number: str, day: dt.date | None = None) -> Discrepancy:
    session.rollback()
    query = select(Discrepancy).where(Discrepancy.key == number)
    if day is not None:
        query = query.where(Discrepancy.day == day)
    return session.scalars(query).one()


def _resolve(session, item_id: int, decision: Decision) -> Discrepancy:
    item = resolve(
        session, item_id, decision, reason="checked the bill", operator="operator:fin"
    )
    session.commit()
    return item


def _balance(session, account) -> int:
    session.rollback()
    return session.get(ledger.Account, account.id).balance_fen


def _parked(session) -> int:
    """What suspense holds beyond the shopper's opening balance, which came from
    it (``make_card``)."""
    return _balance(session, ledger.suspense_account(session)) + 1000


def _fees(session, channel: str) -> int:
    return _balance(session, ledger.fees_account(session, channel))


class Killed(Exception):
    pass


def _recorded(number: str) -> bool:
    """Whether a run has committed a discrepancy about ``number`` (read in a
    session of its own, from inside the run's progress callback)."""
    own = db.new_session()
    try:
        found = own.scalar(select(Discrepancy.id).where(Discrepancy.key == number))
        return found is not None
    finally:
        own.close()


# -- finance's decision, then the channel speaks again ----------------------------


def test_a_channel_only_line_resolved_then_the_day_rerun_after_a_crash_parks_once(
    live_app, shopper, session, trading_day
):
    """A run records its first batch (an open channel-only line) and dies; finance
    trusts the channel before the re-run; the re-run neither records nor books
    that line again."""
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    numbers = [_pay(live_app, shopper, amount="10") for _ in range(3)]
    # The first order's line is changed: channel only, not repairable, open.
    live_app.sandbox.faults.set("wechat", "bill", "changed_amount", numbers[0])
    _after_bills_are_ready(live_app, trading_day)

    def kill_once_it_is_recorded(phase, done, total):
        if phase is Phase.RECORD and _recorded(numbers[0]):
            raise Killed

    with pytest.raises(Killed):
        _reconcile(live_app, trading_day, progress=kill_once_it_is_recorded, batch=1)
    item = _item(session, numbers[0])
    assert (item.kind, item.status) == ("channel_only", DiscrepancyStatus.OPEN)
    _resolve(session, item.id, Decision.TRUST_CHANNEL)
    live_app.sandbox.clock.advance(3600)  # the dead run's lease runs out
    run = _reconcile(live_app, trading_day, batch=1)
    again = _reconcile(live_app, trading_day)

    assert run.state is RunState.FINISHED and again.id == run.id
    assert run.counts["channel_only"] == 3 and run.counts["repaired"] == 2
    item = _item(session, numbers[0])
    assert item.status is DiscrepancyStatus.RESOLVED and item.entry_id
    assert _parked(session) == 1100
    assert _balance(session, shopper.card.wallet) == 1000 + 2 * 1000
    assert ledger.check_ledger(session) == []


def test_a_channel_only_payment_trusted_by_finance_is_not_credited_again_by_its_late_notification(  # noqa: E501
    live_app, shopper, session, trading_day
):
    live_app.sandbox.faults.set("wechat", "notification", "delay")
    live_app.sandbox.faults.set("wechat", "notification_delay_seconds", 3 * 86400)
    number = _pay(live_app, shopper)
    live_app.sandbox.faults.set("wechat", "bill", "changed_amount", number)
    _after_bills_are_ready(live_app, trading_day)
    _reconcile(live_app, trading_day)
    item = _item(session, number)
    assert (item.kind, item.status, item.repairable) == (
        "channel_only",
        DiscrepancyStatus.OPEN,
        False,
    )

    _resolve(session, item.id, Decision.TRUST_CHANNEL)
    live_app.sandbox.clock.advance(3 * 86400)
    live_app.sandbox.outbox.deliver_due()

    clearing = ledger.clearing_account(session, "wechat")
    suspense = _parked(session)
    gained = _balance(session, shopper.card.wallet) - 1000
    fees = _fees(session, "wechat")
    # The channel took one payment of 51 yuan (less its fee): it leaves clearing
    # once, to suspense or to the wallet, not to both.
    assert _balance(session, clearing) + fees == -5100
    assert suspense + gained == 5100
    assert ledger.check_ledger(session) == []


def test_a_held_line_reversed_by_finance_that_arrives_next_day_is_back_before_finance(
    live_app, shopper, session, trading_day
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "after_midnight", number)
    _pay(live_app, shopper)  # the day still has a bill
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)
    _reconcile(live_app, trading_day)
    held = _item(session, number)
    assert (held.kind, held.status) == ("ours_only", DiscrepancyStatus.HELD)
    # Finance does not wait for the hold: "never paid", our top-up is reversed.
    _resolve(session, held.id, Decision.TRUST_CHANNEL)
    reversed_balance = _balance(session, shopper.card.wallet)

    next_day = trading_day + dt.timedelta(days=1)
    _after_bills_are_ready(live_app, next_day)
    second = _reconcile(live_app, next_day)

    assert reversed_balance == 1000 + 5000
    assert second.state is RunState.FINISHED
    session.rollback()
    # The channel did take the money: either the reversal is undone, or the
    # order is before finance again. Silently matched is neither.
    open_items = session.scalars(
        select(Discrepancy).where(
            Discrepancy.out_trade_no == number,
            Discrepancy.status.in_([DiscrepancyStatus.OPEN, DiscrepancyStatus.HELD]),
        )
    ).all()
    restored = _balance(session, shopper.card.wallet) == 1000 + 2 * 5000
    assert restored or open_items
    assert ledger.check_ledger(session) == []


def test_a_held_line_trusted_ours_that_arrives_next_day_moves_no_money(
    live_app, shopper, session, trading_day
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "after_midnight", number)
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)
    _reconcile(live_app, trading_day)
    held = _item(session, number)
    _resolve(session, held.id, Decision.TRUST_OURS)

    next_day = trading_day + dt.timedelta(days=1)
    _after_bills_are_ready(live_app, next_day)
    second = _reconcile(live_app, next_day)

    item = _item(session, number)
    assert (item.status, item.resolution, item.entry_id) == (
        DiscrepancyStatus.RESOLVED,
        "trust_ours",
        None,
    )
    assert second.counts.get("matched_late", 0) == 0
    assert _balance(session, shopper.card.wallet) == 1000 + 2 * 5000
    assert ledger.check_ledger(session) == []


# -- days reconciled out of order --------------------------------------------------


def test_a_line_listed_by_the_next_day_reconciled_first_is_not_left_held(
    live_app, shopper, session, trading_day
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "after_midnight", number)
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    next_day = trading_day + dt.timedelta(days=1)
    _after_bills_are_ready(live_app, next_day)

    later = _reconcile(live_app, next_day, hold_days=1)
    earlier = _reconcile(live_app, trading_day, hold_days=1)
    # Nights later, the hold has run out.
    far = trading_day + dt.timedelta(days=5)
    _after_bills_are_ready(live_app, far)
    _reconcile(live_app, far, hold_days=1)

    assert later.state is earlier.state is RunState.FINISHED
    item = _item(session, number, trading_day)
    assert item.status is DiscrepancyStatus.MATCHED_LATE
    assert _balance(session, shopper.card.wallet) == 1000 + 2 * 5000
    assert ledger.check_ledger(session) == []


# -- repairs and notifications ------------------------------------------------------


def test_a_repaired_top_up_whose_late_notification_lands_before_a_rerun_credits_once(
    live_app, shopper, session, trading_day
):
    """A run dies after repairing its first batch; the late notification of the
    repaired order and the re-run follow: one credit, the repair still counted."""
    live_app.sandbox.faults.set("wechat", "notification", "delay")
    live_app.sandbox.faults.set("wechat", "notification_delay_seconds", 3 * 86400)
    numbers = [_pay(live_app, shopper, amount="10") for _ in range(2)]
    _after_bills_are_ready(live_app, trading_day)

    def kill(phase, done, total):
        if phase is Phase.RECORD:
            raise Killed

    with pytest.raises(Killed):
        _reconcile(live_app, trading_day, progress=kill, batch=1)
    live_app.sandbox.clock.advance(3 * 86400)
    delivered = live_app.sandbox.outbox.deliver_due()
    run = _reconcile(live_app, trading_day, batch=1)

    assert delivered == 2
    assert run.state is RunState.FINISHED and run.counts["repaired"] == 1
    session.rollback()
    items = session.scalars(
        select(Discrepancy).where(Discrepancy.day == trading_day)
    ).all()
    # The other order was settled by its notification before the re-run read it,
    # and matches.
    assert [item.status for item in items] == [DiscrepancyStatus.REPAIRED]
    assert all(find_top_up(session, n).state is TopUpState.SUCCEEDED for n in numbers)
    assert _balance(session, shopper.card.wallet) == 1000 + 2 * 1000
    entries = session.scalars(
        select(ledger.JournalEntry).where(
            ledger.JournalEntry.order_ref.in_(numbers),
            ledger.JournalEntry.kind == ledger.EntryKind.TOP_UP,
        )
    ).all()
    assert len(entries) == 2
    assert ledger.check_ledger(session) == []


# -- races on PostgreSQL ------------------------------------------------------------


@pytest.mark.postgres
def test_wechat_and_alipay_reconciled_at_once_repair_one_wallet_and_book_both_fees(
    live_app, shopper, session, trading_day
):
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    live_app.sandbox.faults.set("alipay", "notification", "drop")
    wechat = [_pay(live_app, shopper, amount="10") for _ in range(3)]
    alipay = [_pay_alipay(live_app, shopper, amount="20") for _ in range(3)]
    _after_bills_are_ready(live_app, trading_day)

    def job(channel):
        def run():
            with live_app.app.app_context():
                return reconcile_day(channel, trading_day, batch=1)

        return run

    outcomes = together(job("wechat"), job("alipay"))

    assert [outcome.state for outcome in outcomes] == [RunState.FINISHED] * 2
    assert [o.counts["repaired"] for o in outcomes] == [3, 3]
    assert all(
        find_top_up(session, n).state is TopUpState.SUCCEEDED for n in wechat + alipay
    )
    assert _balance(session, shopper.card.wallet) == 1000 + 3 * 1000 + 3 * 2000
    # Each channel's fees booked once, on its own accounts.
    assert _fees(session, "wechat") == -3 * 6  # 0.6 % of 10 yuan
    assert _fees(session, "alipay") < 0
    fee_entries = session.scalars(
        select(ledger.JournalEntry.idempotency_ref).where(
            ledger.JournalEntry.kind == ledger.EntryKind.FEE
        )
    ).all()
    assert sorted(fee_entries) == [
        f"fees:alipay:{trading_day}",
        f"fees:wechat:{trading_day}",
    ]
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
def test_a_day_settled_twice_at_once_pays_the_merchant_once(
    app, session, make_card, merchant
):
    clock = app.extensions["campus.sandbox"].clock
    day = dt.date(2038, 12, 1)
    clock.set(dt.datetime.combine(day, dt.time(12), SHANGHAI))
    card = make_card(balance_fen=5000)
    pay_from_wallet(session, card.number, merchant, 1800, idempotency_ref="lunch")
    session.commit()
    start, end = day_bounds(day, SHANGHAI)
    code = merchant.code

    def job():
        own = db.new_session()
        try:
            find_merchant(own, code)
            written = settle_merchants(own, day, start, end)
            own.commit()
            return [row.paid_fen for row in written]
        except IntegrityError:
            # The statement's unique (merchant, day): the one refusal a second
            # settlement of the day may meet.
            own.rollback()
            return "refused"
        finally:
            own.close()

    try:
        outcomes = together(job, job)
    finally:
        clock.reset()

    # The second waits on the payable's lock, then is refused by the statement's
    # unique (merchant, day) or finds nothing owed: never a second payout.
    paid = [outcome for outcome in outcomes if outcome != "refused"]
    assert paid[0] == [1800] and paid[1:] in ([], [[]])
    session.rollback()
    assert len(session.scalars(select(MerchantStatement)).all()) == 1
    assert _balance(session, merchant.settled) == 1800
    assert _balance(session, merchant.payable) == 0
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
def test_two_runs_of_one_day_at_once_repair_once_and_one_is_refused_or_waits(
    live_app, shopper, session, trading_day
):
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    lost = [_pay(live_app, shopper, amount="10") for _ in range(3)]
    _after_bills_are_ready(live_app, trading_day)

    def run():
        with live_app.app.app_context():
            try:
                return reconcile_day("wechat", trading_day, batch=1)
            except RunInProgress:
                return None

    outcomes = together(run, run)

    # The one that lost the claim is refused, or, if the other had finished by
    # then, given its finished run: the day is done once either way.
    finished = [outcome for outcome in outcomes if outcome is not None]
    assert finished and {outcome.id for outcome in finished} == {finished[0].id}
    assert all(outcome.state is RunState.FINISHED for outcome in finished)
    assert all(outcome.attempts == 1 for outcome in finished)
    assert finished[0].counts["repaired"] == 3
    assert all(
        find_top_up(session, number).state is TopUpState.SUCCEEDED for number in lost
    )
    assert _balance(session, shopper.card.wallet) == 1000 + 3 * 1000
    assert ledger.check_ledger(session) == []


def test_an_alipay_bill_of_another_day_is_refused_and_changes_nothing(
    live_app, shopper, session, trading_day
):
    live_app.sandbox.faults.set("alipay", "notification", "drop")
    number = _pay_alipay(live_app, shopper)
    _after_bills_are_ready(live_app, trading_day)
    bill = in_app(live_app, lambda: channel_for("alipay").download_bill(trading_day))
    next_day = trading_day + dt.timedelta(days=1)
    # Handed over as the next day's, its files still say which day they are.
    misdated = dataclasses.replace(bill, day=next_day)

    with pytest.raises(BillRejected, match=f"of {trading_day}, not {next_day}"):
        in_app(live_app, lambda: reconcile_day("alipay", next_day, bill=misdated))

    session.rollback()
    assert find_top_up(session, number).state is TopUpState.PAYING
    assert session.scalars(select(Discrepancy)).all() == []
