"""Random sequences of credits, debits, refunds and reversals keep the ledger whole."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campus.errors import CardNotActive, InsufficientFunds
from payments import ledger
from payments.cards import CardStatus, change_status
from payments.ledger import EntryKind
from payments.wallet import credit_wallet, pay_from_wallet

CARDS = 3
_runs = itertools.count()

operations = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), st.integers(0, CARDS - 1), st.integers(1, 50_000)),
        st.tuples(st.just("debit"), st.integers(0, CARDS - 1), st.integers(1, 30_000)),
        st.tuples(st.just("refund"), st.integers(0, 100), st.integers(1, 30_000)),
        st.tuples(st.just("reverse"), st.integers(0, 100), st.just(0)),
        st.tuples(st.just("freeze"), st.integers(0, CARDS - 1), st.just(0)),
        st.tuples(st.just("replay"), st.integers(0, 100), st.just(0)),
    ),
    max_size=25,
)


# The fixtures make real rows; each example uses fresh cards, so sharing them
# across examples is what we want.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=operations)
def test_random_movements_keep_the_ledger_balanced(session, make_card, merchant, steps):
    cards = [make_card() for _ in range(CARDS)]
    clearing = ledger.clearing_account(session, "wechat")
    expected = [0] * CARDS
    frozen = [False] * CARDS
    payments: list[tuple[int, int, str]] = []  # (card, amount, ref)
    posted_entries: list[tuple[ledger.JournalEntry, dict[int, int]]] = []
    run = next(_runs)

    for step, (action, index, amount) in enumerate(steps):
        ref = f"prop:{run}:{step}"
        card = None
        try:
            if action == "credit":
                card = index
                result = credit_wallet(
                    session,
                    cards[card].number,
                    clearing,
                    amount,
                    kind=EntryKind.TOP_UP,
                    idempotency_ref=ref,
                )
                expected[card] += amount
                posted_entries.append((result.entry, {card: amount}))
            elif action == "debit":
                card = index
                result = pay_from_wallet(
                    session, cards[card].number, merchant, amount, idempotency_ref=ref
                )
                expected[card] -= amount
                payments.append((card, amount, ref))
                posted_entries.append((result.entry, {card: -amount}))
            elif action == "refund" and payments:
                card, paid, _ = payments[index % len(payments)]
                amount = min(amount, paid)
                result = credit_wallet(
                    session,
                    cards[card].number,
                    merchant.payable,
                    amount,
                    kind=EntryKind.REFUND,
                    idempotency_ref=ref,
                )
                expected[card] += amount
                posted_entries.append((result.entry, {card: amount}))
            elif action == "reverse" and posted_entries:
                # Reversing touches only the entry's own accounts; a frozen card
                # does not stop it, as a channel's reversal cannot be refused.
                entry, effect = posted_entries[index % len(posted_entries)]
                result = ledger.reverse_entry(session, entry, reason="property")
                if result.created:
                    for card, delta in effect.items():
                        expected[card] -= delta
            elif action == "freeze":
                target = CardStatus.ACTIVE if frozen[index] else CardStatus.FROZEN
                change_status(
                    session,
                    cards[index].number,
                    target,
                    reason="property",
                    actor="test",
                )
                frozen[index] = not frozen[index]
            elif action == "replay" and payments:
                card, amount, old_ref = payments[index % len(payments)]
                result = pay_from_wallet(
                    session,
                    cards[card].number,
                    merchant,
                    amount,
                    idempotency_ref=old_ref,
                )
                assert not result.created
            session.commit()
        except CardNotActive:
            session.rollback()
            assert card is not None and frozen[card]
        except InsufficientFunds:
            # Money that already left (a wallet spent, a payable refunded) cannot
            # leave twice; a credit never runs short.
            session.rollback()
            assert action in {"debit", "refund", "reverse"}

        for position, card in enumerate(cards):
            session.refresh(card.wallet)
            assert card.wallet.balance_fen == expected[position]
            assert card.wallet.balance_fen >= 0

    assert ledger.check_ledger(session) == []
