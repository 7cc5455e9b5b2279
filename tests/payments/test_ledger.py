from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from campus.errors import InsufficientFunds
from payments import ledger
from payments.ledger import Account, EntryKind, JournalEntry, Posting
from payments.wallet import pay_from_wallet


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_a_payment_moves_money_from_wallet_to_merchant(session, make_card, merchant):
    card = make_card(balance_fen=1000)

    posted = pay_from_wallet(
        session,
        card.number,
        merchant,
        350,
        idempotency_ref="payment:P1",
        order_ref="P1",
    )
    session.commit()

    assert posted.created
    assert card.wallet.balance_fen == 650
    assert merchant.payable.balance_fen == 350
    assert sorted(p.amount_fen for p in posted.entry.postings) == [-350, 350]
    assert ledger.check_ledger(session) == []


def test_a_debit_beyond_the_balance_posts_nothing(session, make_card, merchant):
    card = make_card(balance_fen=100)
    entries_before = _count(session, JournalEntry)

    with pytest.raises(InsufficientFunds) as raised:
        pay_from_wallet(
            session, card.number, merchant, 101, idempotency_ref="payment:P2"
        )
    session.rollback()

    assert raised.value.code == "insufficient_funds"
    assert _count(session, JournalEntry) == entries_before
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 100
    assert ledger.check_ledger(session) == []


def test_the_same_event_posts_once(session, make_card, merchant):
    card = make_card(balance_fen=1000)

    first = pay_from_wallet(
        session, card.number, merchant, 100, idempotency_ref="payment:P3"
    )
    second = pay_from_wallet(
        session, card.number, merchant, 100, idempotency_ref="payment:P3"
    )
    session.commit()

    assert first.created and not second.created
    assert second.entry.id == first.entry.id
    assert card.wallet.balance_fen == 900


def test_a_reference_reused_for_another_movement_is_refused(
    session, make_card, merchant
):
    card = make_card(balance_fen=1000)
    pay_from_wallet(session, card.number, merchant, 100, idempotency_ref="payment:P4")
    session.commit()

    with pytest.raises(ledger.IdempotencyConflict):
        pay_from_wallet(
            session, card.number, merchant, 200, idempotency_ref="payment:P4"
        )


@pytest.mark.parametrize("amounts", [[100], [100, -99], [100, 0, -100], [100, -100.0]])
def test_unbalanced_or_odd_postings_are_a_programming_error(
    session, make_card, amounts
):
    card = make_card()
    other = ledger.suspense_account(session)
    accounts = [card.wallet, other, other]

    with pytest.raises(ledger.UnbalancedEntry):
        ledger.post_entry(
            session,
            kind=EntryKind.ADJUSTMENT,
            idempotency_ref="bad",
            postings=list(zip(accounts, amounts, strict=False)),
        )


def test_reversal_undoes_an_entry_once(session, make_card, merchant):
    card = make_card(balance_fen=500)
    posted = pay_from_wallet(
        session, card.number, merchant, 200, idempotency_ref="payment:P5"
    )
    session.commit()

    first = ledger.reverse_entry(session, posted.entry, reason="code payment reversed")
    again = ledger.reverse_entry(session, posted.entry, reason="code payment reversed")
    session.commit()

    assert first.created and not again.created
    assert card.wallet.balance_fen == 500
    assert merchant.payable.balance_fen == 0
    assert ledger.check_ledger(session) == []


def test_the_database_refuses_a_negative_wallet_even_past_the_code(session, make_card):
    card = make_card(balance_fen=10)

    with pytest.raises(Exception) as raised:
        session.execute(
            update(Account).where(Account.id == card.wallet.id).values(balance_fen=-1)
        )
        session.flush()
    session.rollback()

    assert "non_negative" in str(raised.value) or "CHECK" in str(raised.value)


@pytest.mark.unbalances_ledger("drifts a cached balance to prove the check names it")
def test_check_names_an_account_whose_cached_balance_drifted(session, make_card):
    card = make_card(balance_fen=300)
    session.execute(
        update(Account).where(Account.id == card.wallet.id).values(balance_fen=301)
    )
    session.commit()

    problems = ledger.check_ledger(session)

    assert [problem.account for problem in problems] == [card.wallet.code]
    assert "301" in problems[0].description and "300" in problems[0].description


@pytest.mark.unbalances_ledger("edits a posting to prove the check finds the entry")
def test_check_finds_an_entry_that_does_not_balance(session, make_card):
    card = make_card(balance_fen=300)
    posting = session.scalars(
        select(Posting).where(Posting.account_id == card.wallet.id)
    ).one()
    session.execute(
        update(Posting).where(Posting.id == posting.id).values(amount_fen=299)
    )
    session.execute(
        update(Account).where(Account.id == card.wallet.id).values(balance_fen=299)
    )
    session.commit()

    descriptions = [problem.description for problem in ledger.check_ledger(session)]

    assert any("trial balance is -1 fen" in text for text in descriptions)
    assert any("sums to -1 fen" in text for text in descriptions)


def test_statement_shows_the_balance_after_each_line(session, make_card, merchant):
    card = make_card(balance_fen=1000)
    for index, amount in enumerate([100, 250]):
        pay_from_wallet(
            session,
            card.number,
            merchant,
            amount,
            idempotency_ref=f"payment:S{index}",
            order_ref=f"S{index}",
        )
    session.commit()

    lines = ledger.statement(session, card.wallet)

    assert [(line.amount_fen, line.balance_fen) for line in lines] == [
        (-250, 650),
        (-100, 900),
        (1000, 1000),
    ]


@pytest.mark.parametrize("status", ["frozen", "lost", "closed"])
def test_a_card_that_is_not_active_cannot_pay_or_be_credited(
    session, make_card, merchant, status
):
    from campus.errors import CardNotActive
    from payments.cards import CardStatus, change_status
    from payments.wallet import credit_wallet

    card = make_card(balance_fen=0 if status == "closed" else 500)
    change_status(session, card.number, CardStatus(status), reason="test", actor="t")
    session.commit()
    entries_before = _count(session, JournalEntry)

    with pytest.raises(CardNotActive) as refused_payment:
        pay_from_wallet(session, card.number, merchant, 100, idempotency_ref="p:x")
    session.rollback()
    with pytest.raises(CardNotActive):
        credit_wallet(
            session,
            card.number,
            ledger.clearing_account(session, "wechat"),
            100,
            kind=EntryKind.TOP_UP,
            idempotency_ref="t:x",
        )
    session.rollback()

    assert refused_payment.value.fields["card_status"] == status
    assert _count(session, JournalEntry) == entries_before
