"""Merchant statements read from the ledger; the payout is posted once."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from payments import ledger
from payments.ledger import EntryKind
from payments.merchants import MerchantKind, open_merchant
from payments.wallet import credit_wallet, pay_from_wallet
from reconciliation.settlement import (
    ChannelFee,
    MerchantStatement,
    compute_statements,
    settle_merchants,
)

# Entries are stamped by the service's clock, which each test sets to noon (UTC)
# of this day: a run that crosses midnight cannot split a test's entries.
DAY = dt.date(2031, 7, 1)


@pytest.fixture(autouse=True)
def _at_noon(app):  # type: ignore[no-untyped-def]
    clock = app.extensions["campus.sandbox"].clock
    clock.set(dt.datetime.combine(DAY, dt.time(12), dt.UTC))
    yield
    clock.reset()


def _bounds():
    start = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def test_a_day_of_takings_refunds_and_fees_settles_to_the_ledger(
    session, make_card, merchant
):
    card = make_card(balance_fen=10_000)
    clearing = ledger.clearing_account(session, "wechat")
    for index, amount in enumerate([1200, 800, 2500]):
        pay_from_wallet(
            session, card.number, merchant, amount, idempotency_ref=f"campus:{index}"
        )
    ledger.transfer(
        session,
        kind=EntryKind.PAYMENT,
        idempotency_ref="wx:1",
        source=clearing,
        destination=merchant.payable,
        amount_fen=3000,
        order_ref="P-wx-1",
    )
    credit_wallet(
        session,
        card.number,
        merchant.payable,
        500,
        kind=EntryKind.REFUND,
        idempotency_ref="refund:1",
    )
    session.add(
        ChannelFee(
            channel="wechat",
            day=DAY,
            out_trade_no="P-wx-1",
            merchant=merchant.code,
            fee_fen=18,
        )
    )
    session.commit()
    start, end = _bounds()

    (statement,) = compute_statements(session, DAY, start, end)
    written = settle_merchants(session, DAY, start, end)
    session.commit()
    again = settle_merchants(session, DAY, start, end)
    session.commit()

    assert statement.gross_by_channel == {"campus": 4500, "wechat": 3000}
    assert (statement.refunds_fen, statement.fees_fen) == (500, 18)
    assert statement.net_fen == 7500 - 500 - 18
    assert [row.id for row in again] == [row.id for row in written]
    row = session.scalars(select(MerchantStatement)).one()
    assert json.loads(row.gross_by_channel) == {"campus": 4500, "wechat": 3000}
    session.refresh(merchant.payable)
    session.refresh(merchant.settled)
    assert merchant.payable.balance_fen == 0
    assert merchant.settled.balance_fen == 6982
    assert ledger.check_ledger(session) == []


def _on_day(session, refs: list[str], moment: dt.datetime) -> None:
    """Stamp the named entries at ``moment``, as if posted then."""
    entries = ledger.JournalEntry.__table__
    session.execute(
        entries.update()
        .where(entries.c.idempotency_ref.in_(refs))
        .values(created_at=moment)
    )
    session.commit()


def test_a_day_of_more_refunds_than_takings_pays_nothing_and_is_owed(
    session, make_card, merchant
):
    card = make_card(balance_fen=5000)
    start, end = _bounds()
    yesterday = (start - dt.timedelta(days=1), start)
    pay_from_wallet(session, card.number, merchant, 1000, idempotency_ref="old")
    session.commit()
    _on_day(session, ["old"], start - dt.timedelta(hours=1))
    (paid_yesterday,) = settle_merchants(
        session, DAY - dt.timedelta(days=1), *yesterday
    )
    session.commit()
    # Today only a refund of yesterday's (paid out) takings happens.
    credit_wallet(
        session,
        card.number,
        merchant.payable,
        300,
        kind=EntryKind.REFUND,
        idempotency_ref="refund:today",
    )
    session.commit()

    (row,) = settle_merchants(session, DAY, start, end)
    session.commit()

    assert paid_yesterday.paid_fen == 1000
    assert (row.gross_fen, row.refunds_fen, row.net_fen) == (0, 300, -300)
    assert row.paid_fen == 0 and row.entry_id is None
    session.refresh(merchant.payable)
    assert merchant.payable.balance_fen == -300, "the merchant owes the refund"
    assert ledger.check_ledger(session) == []


def test_a_refund_after_the_payout_is_recovered_from_the_next_payouts(
    session, make_card, merchant
):
    card = make_card(balance_fen=9000)
    start, end = _bounds()
    days = [
        (DAY + dt.timedelta(days=n), start + dt.timedelta(days=n),
         end + dt.timedelta(days=n))
        for n in range(3)
    ]  # fmt: skip
    pay_from_wallet(session, card.number, merchant, 2000, idempotency_ref="lunch")
    session.commit()
    first = settle_merchants(session, *days[0])
    session.commit()
    # The next day: yesterday's lunch refunded (already paid out), a supper sold.
    credit_wallet(
        session,
        card.number,
        merchant.payable,
        2000,
        kind=EntryKind.REFUND,
        idempotency_ref="refund:lunch",
    )
    pay_from_wallet(session, card.number, merchant, 1500, idempotency_ref="supper")
    session.commit()
    _on_day(session, ["refund:lunch", "supper"], days[1][1] + dt.timedelta(hours=12))
    second = settle_merchants(session, *days[1])
    session.commit()
    # The third day's takings first pay back what the merchant still owes.
    pay_from_wallet(session, card.number, merchant, 1000, idempotency_ref="dinner")
    session.commit()
    _on_day(session, ["dinner"], days[2][1] + dt.timedelta(hours=12))
    third = settle_merchants(session, *days[2])
    session.commit()

    assert [row.net_fen for row in first + second + third] == [2000, -500, 1000]
    assert [row.paid_fen for row in first + second + third] == [2000, 0, 500]
    session.refresh(merchant.payable)
    session.refresh(merchant.settled)
    assert merchant.payable.balance_fen == 0
    assert merchant.settled.balance_fen == 2500, "paid what was sold and kept"
    assert ledger.check_ledger(session) == []


def test_a_day_settled_late_never_pays_again_what_a_later_day_paid(
    session, make_card, merchant
):
    card = make_card(balance_fen=9000)
    start, end = _bounds()
    earlier = (DAY - dt.timedelta(days=1), start - dt.timedelta(days=1), start)
    pay_from_wallet(session, card.number, merchant, 700, idempotency_ref="monday")
    pay_from_wallet(session, card.number, merchant, 300, idempotency_ref="tuesday")
    session.commit()
    _on_day(session, ["monday"], start - dt.timedelta(hours=6))

    # Tuesday is settled first (Monday's run had failed), then Monday is caught up.
    (tuesday,) = settle_merchants(session, DAY, start, end)
    session.commit()
    (monday,) = settle_merchants(session, *earlier)
    session.commit()

    assert (tuesday.net_fen, tuesday.paid_fen) == (300, 1000)
    assert (monday.net_fen, monday.paid_fen) == (700, 0)
    session.refresh(merchant.settled)
    assert merchant.settled.balance_fen == 1000
    assert ledger.check_ledger(session) == []


def test_a_refund_before_the_payout_does_not_stop_the_days_settlement(
    session, make_card, merchant
):
    card = make_card(balance_fen=9000)
    other = open_merchant(
        session, "M-OTHER", "另一窗口", "Another window", MerchantKind.CANTEEN_WINDOW
    )
    pay_from_wallet(session, card.number, merchant, 2000, idempotency_ref="a")
    pay_from_wallet(session, card.number, other, 1000, idempotency_ref="b")
    session.commit()
    start, end = _bounds()
    # Refunded the next morning, before the nightly run settles the day.
    credit_wallet(
        session,
        card.number,
        merchant.payable,
        2000,
        kind=EntryKind.REFUND,
        idempotency_ref="refund:a",
    )
    session.execute(
        ledger.JournalEntry.__table__.update()
        .where(ledger.JournalEntry.__table__.c.idempotency_ref == "refund:a")
        .values(created_at=end + dt.timedelta(hours=8))
    )
    session.commit()

    written = settle_merchants(session, DAY, start, end)
    session.commit()

    assert sorted(row.net_fen for row in written) == [1000, 2000]
    assert sorted(row.paid_fen for row in written) == [1000, 2000]
    assert all(row.entry_id for row in written), "every merchant is paid its day"
    session.refresh(merchant.payable)
    assert merchant.payable.balance_fen == -2000
    assert ledger.check_ledger(session) == []


def test_finance_reads_statements_as_json_csv_and_a_page(
    client, session, make_card, merchant, sign_in_operator
):
    from campus.auth import Role

    card = make_card(balance_fen=5000)
    pay_from_wallet(session, card.number, merchant, 1250, idempotency_ref="p")
    session.commit()
    start, end = _bounds()
    settle_merchants(session, DAY, start, end)
    session.commit()
    code = merchant.code
    sign_in_operator(Role.REGISTRAR)
    refused = client.get("/api/reconciliation/statements")
    sign_in_operator(Role.FINANCE)

    listed = client.get(f"/api/reconciliation/statements?merchant={code}")
    csv = client.get(f"/reconciliation/statements.csv?merchant={code}")
    page = client.get(f"/reconciliation/merchants/{code}")

    assert refused.status_code == 403
    assert listed.json[0]["gross_by_channel"] == {"campus": 1250}
    assert listed.json[0]["net_fen"] == 1250 and listed.json[0]["entry_id"]
    lines = csv.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0].startswith("merchant,day,gross_campus_fen")
    assert "12.50" in page.get_data(as_text=True)
