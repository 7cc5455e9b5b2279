"""Top-ups open within limits and settle exactly once, whoever reports them."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from campus.database import db
from campus.errors import CardNotActive, InvalidAmount
from payments import ledger
from payments.cards import CardStatus, change_status
from payments.channels.base import PaymentResult, TradeState
from payments.topups import (
    SettleOutcome,
    TopUp,
    TopUpLimits,
    TopUpRefused,
    TopUpState,
    claim_stale,
    finish_unpaid,
    open_top_up,
    settle_top_up,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
MINUTE = dt.timedelta(minutes=1)
NOON = dt.datetime(2026, 12, 3, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
LIMITS = TopUpLimits(minimum_fen=100, maximum_fen=50_000, daily_cap_fen=80_000)


def _open(session, card, amount_fen=5000, now=NOON, channel="wechat"):
    top_up = open_top_up(
        session,
        card.number,
        amount_fen,
        channel=channel,
        payer_kind="native",
        limits=LIMITS,
        zone=SHANGHAI,
        now=now,
    )
    session.commit()
    return top_up


def _paid(top_up, amount_fen=None, transaction_id="4200000001"):
    return PaymentResult(
        out_trade_no=top_up.out_trade_no,
        state=TradeState.SUCCEEDED,
        transaction_id=transaction_id,
        amount_fen=top_up.amount_fen if amount_fen is None else amount_fen,
    )


def _entries(session) -> int:
    return session.scalar(select(func.count()).select_from(ledger.JournalEntry))


def test_a_paid_top_up_credits_the_wallet_once(session, make_card):
    card = make_card(balance_fen=100)
    top_up = _open(session, card)

    first = settle_top_up(session, "wechat", _paid(top_up), via="notification")
    session.commit()
    second = settle_top_up(session, "wechat", _paid(top_up), via="query")
    session.commit()

    assert (first, second) == (SettleOutcome.CREDITED, SettleOutcome.ALREADY)
    session.refresh(top_up)
    assert top_up.state is TopUpState.SUCCEEDED
    assert top_up.transaction_id == "4200000001"
    assert card.wallet.balance_fen == 5100
    assert ledger.clearing_account(session, "wechat").balance_fen == -5000
    assert ledger.check_ledger(session) == []


def test_a_different_amount_is_flagged_not_credited(session, make_card):
    card = make_card()
    top_up = _open(session, card)
    before = _entries(session)

    outcome = settle_top_up(
        session, "wechat", _paid(top_up, amount_fen=4999), via="notification"
    )
    session.commit()

    assert outcome is SettleOutcome.FLAGGED
    session.refresh(top_up)
    assert top_up.state is TopUpState.PAYING and top_up.needs_review
    assert "4999" in top_up.review_reason
    assert _entries(session) == before


def test_a_payment_for_a_closed_order_is_flagged_for_reconciliation(session, make_card):
    card = make_card()
    top_up = _open(session, card)
    finish_unpaid(session, top_up.out_trade_no, TopUpState.CLOSED, "expired")
    session.commit()

    outcome = settle_top_up(session, "wechat", _paid(top_up), via="notification")
    session.commit()

    assert outcome is SettleOutcome.FLAGGED
    session.refresh(top_up)
    assert top_up.state is TopUpState.CLOSED
    assert top_up.needs_review and "closed" in top_up.review_reason
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 0


def test_a_second_transaction_for_a_settled_order_is_flagged(session, make_card):
    card = make_card()
    top_up = _open(session, card)
    settle_top_up(session, "wechat", _paid(top_up), via="notification")
    session.commit()

    outcome = settle_top_up(
        session, "wechat", _paid(top_up, transaction_id="42X"), via="notification"
    )
    session.commit()

    assert outcome is SettleOutcome.FLAGGED
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 5000


def test_a_report_that_is_not_a_payment_settles_nothing(session, make_card):
    card = make_card()
    top_up = _open(session, card)

    outcome = settle_top_up(
        session,
        "wechat",
        PaymentResult(out_trade_no=top_up.out_trade_no, state=TradeState.PAYING),
        via="query",
    )

    assert outcome is SettleOutcome.NOT_PAID


def test_a_card_frozen_after_paying_still_receives_its_money(session, make_card):
    card = make_card()
    top_up = _open(session, card)
    change_status(session, card.number, CardStatus.FROZEN, reason="lost", actor="t")
    session.commit()

    outcome = settle_top_up(session, "wechat", _paid(top_up), via="notification")
    session.commit()

    assert outcome is SettleOutcome.CREDITED
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 5000


def test_a_flagged_top_up_is_left_to_finance_and_its_page_says_so(
    session, make_card, client
):
    card = make_card()
    flagged = _open(session, card)
    waiting = _open(session, card, now=NOON + dt.timedelta(minutes=1))
    # Paid at another amount: the channel's word, not ours to credit.
    outcome = settle_top_up(
        session, "wechat", _paid(flagged, amount_fen=5001), via="notification"
    )
    session.commit()
    number = card.person.number

    claimed = claim_stale(session, now=NOON + dt.timedelta(hours=1), older_than=MINUTE)
    session.commit()
    client.post("/sign-in/dev", data={"number": number})
    page = client.get(f"/card/top-ups/{flagged.out_trade_no}").get_data(as_text=True)

    assert outcome is SettleOutcome.FLAGGED
    # The job asks only about the order still waiting.
    assert claimed == [waiting.out_trade_no]
    assert 'data-testid="top-up-review"' in page
    assert "财务" in page
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 0


@pytest.mark.parametrize("amount", [99, 50_001])
def test_amounts_outside_the_limits_are_refused(session, make_card, amount):
    card = make_card()

    with pytest.raises(InvalidAmount) as refused:
        _open(session, card, amount_fen=amount)

    assert refused.value.fields == {"minimum_fen": 100, "maximum_fen": 50_000}


def test_the_daily_cap_counts_the_business_day_in_shanghai(session, make_card):
    card = make_card()
    _open(session, card, amount_fen=50_000)
    late_evening = dt.datetime(2026, 12, 3, 15, 59, tzinfo=dt.UTC)  # 23:59 local
    next_morning = dt.datetime(2026, 12, 3, 16, 1, tzinfo=dt.UTC)  # 00:01 local

    _open(session, card, amount_fen=30_000, now=late_evening)
    with pytest.raises(TopUpRefused) as refused:
        _open(session, card, amount_fen=100, now=late_evening)
    session.rollback()
    _open(session, card, amount_fen=50_000, now=next_morning)

    assert refused.value.fields["remaining_fen"] == 0


def test_closed_and_failed_top_ups_do_not_count_toward_the_cap(session, make_card):
    card = make_card()
    top_up = _open(session, card, amount_fen=50_000)
    finish_unpaid(session, top_up.out_trade_no, TopUpState.CLOSED, "abandoned")
    session.commit()

    assert _open(session, card, amount_fen=50_000).state is TopUpState.PAYING


@pytest.mark.parametrize("status", ["frozen", "lost"])
def test_an_inactive_card_cannot_start_a_top_up(session, make_card, status):
    card = make_card()
    change_status(session, card.number, CardStatus(status), reason="x", actor="t")
    session.commit()

    with pytest.raises(CardNotActive):
        _open(session, card)


def test_the_query_job_claims_each_stale_order_once(session, make_card):
    card = make_card()
    stale = _open(session, card, now=NOON - dt.timedelta(minutes=10))
    fresh = _open(session, card, now=NOON)

    first = claim_stale(session, now=NOON, older_than=dt.timedelta(minutes=3))
    session.commit()
    second = claim_stale(session, now=NOON, older_than=dt.timedelta(minutes=3))
    after_lease = claim_stale(
        session, now=NOON + dt.timedelta(minutes=4), older_than=dt.timedelta(minutes=5)
    )

    assert first == [stale.out_trade_no]
    assert second == []
    assert after_lease == [stale.out_trade_no]
    assert fresh.out_trade_no not in after_lease


@pytest.mark.postgres
def test_ten_copies_of_one_payment_racing_credit_once(session, make_card):
    card = make_card()
    top_up = _open(session, card)
    result = _paid(top_up)
    barrier = threading.Barrier(10)

    def settle(_):
        own = db.new_session()
        try:
            barrier.wait()
            outcome = settle_top_up(own, "wechat", result, via="notification")
            own.commit()
            return outcome
        finally:
            own.close()

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(settle, range(10)))

    assert outcomes.count(SettleOutcome.CREDITED) == 1
    assert outcomes.count(SettleOutcome.ALREADY) == 9
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 5000
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
def test_two_query_jobs_at_once_claim_disjoint_orders(session, make_card):
    card = make_card()
    numbers = {
        _open(
            session, card, amount_fen=100, now=NOON - dt.timedelta(minutes=10)
        ).out_trade_no
        for _ in range(20)
    }
    barrier = threading.Barrier(2)

    def job(_):
        own = db.new_session()
        try:
            barrier.wait()
            claimed = claim_stale(own, now=NOON, older_than=dt.timedelta(minutes=3))
            own.commit()
            return claimed
        finally:
            own.close()

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(job, range(2))

    assert not set(first) & set(second)
    assert set(first) | set(second) == numbers
    assert session.scalar(select(func.count()).select_from(TopUp)) == 20
