"""Races on purpose, on PostgreSQL: many transactions at once on one wallet."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from campus.database import db
from campus.errors import InsufficientFunds
from payments import ledger
from payments.merchants import find_merchant
from payments.wallet import pay_from_wallet

pytestmark = pytest.mark.postgres


def _race(count: int, workers: int, attempt):
    """Run ``attempt(index, session)`` ``count`` times on ``workers`` threads, all
    released at once, each in its own session and transaction."""
    barrier = threading.Barrier(min(count, workers))

    def run(index: int) -> str:
        session = db.new_session()
        try:
            if index < workers:
                barrier.wait()
            outcome = attempt(index, session)
            session.commit()
            return outcome
        except InsufficientFunds:
            session.rollback()
            return "insufficient"
        finally:
            session.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(count)))


def test_100_concurrent_debits_never_overdraw(session, make_card, merchant):
    card = make_card(balance_fen=5000)
    # Read before the race: the test's own session is not for other threads.
    number, merchant_code = card.number, merchant.code

    def debit(index, own_session):
        own_merchant = find_merchant(own_session, merchant_code)
        pay_from_wallet(
            own_session, number, own_merchant, 70, idempotency_ref=f"race:{index}"
        )
        return "paid"

    outcomes = _race(100, 32, debit)

    assert outcomes.count("paid") == 71
    assert outcomes.count("insufficient") == 29
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 5000 - 71 * 70
    assert ledger.check_ledger(session) == []


def test_one_reference_from_10_threads_posts_once(session, make_card, merchant):
    card = make_card(balance_fen=5000)
    number, merchant_code = card.number, merchant.code

    def debit(index, own_session):
        own_merchant = find_merchant(own_session, merchant_code)
        posted = pay_from_wallet(
            own_session, number, own_merchant, 100, idempotency_ref="race:same-event"
        )
        return "created" if posted.created else "replayed"

    outcomes = _race(10, 10, debit)

    assert outcomes.count("created") == 1
    assert outcomes.count("replayed") == 9
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 4900
    assert ledger.check_ledger(session) == []
