"""Random sequences of credits, debits, refunds and reversals keep the ledger whole."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from campus.errors import CardNotActive, InsufficientFunds
from payments import ledger
from payments.cards import CardStatus, change_status
from payments.ledger import EntryKind
from payments.merchants import MerchantKind, open_merchant
from payments.wallet import credit_wallet, pay_from_wallet

CARDS = 3
PAYABLE = "payable"
_runs = itertools.count()

operations = st.lists(
    st.one_of(
        st.tuples(st.just("credit"), st.integers(0, CARDS - 1), st.integers(1, 50_000)),
        st.tuples(st.just("debit"), st.integers(0, CARDS - 1), st.integers(1, 30_000)),
        # A debit of the whole balance, a fen less or a fen more: the boundary a
        # random amount almost never hits.
        st.tuples(st.just("debit_near"), st.integers(0, CARDS - 1), st.integers(-1, 1)),
        st.tuples(st.just("refund"), st.integers(0, 100), st.integers(1, 30_000)),
        st.tuples(st.just("reverse"), st.integers(0, 100), st.just(0)),
        st.tuples(st.just("freeze"), st.integers(0, CARDS - 1), st.just(0)),
        st.tuples(st.just("replay"), st.integers(0, 100), st.just(0)),
    ),
    max_size=25,
)
# Cards start with money, so that debits and refusals are there from the first step.
openings = st.lists(st.integers(0, 40_000), min_size=CARDS, max_size=CARDS)


# The fixtures make real rows, shared across examples; each example opens fresh
# cards and a fresh merchant, so that its payable starts at zero; a refund may
# take it below zero, a reversal may run a wallet short.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(opening=openings, steps=operations)
# The boundaries, every run: the whole balance spent and a fen more; a refund and a
# reversal of money that has already left again.
@example(opening=[1000, 0, 0], steps=[("debit", 0, 1000), ("debit", 0, 1)])
@example(
    opening=[1000, 0, 0],
    steps=[("credit", 0, 500), ("debit", 0, 1500), ("reverse", 0, 0)],
)
@example(
    opening=[1000, 0, 0],
    steps=[
        ("debit", 0, 600),
        ("refund", 0, 600),
        ("refund", 0, 600),
        ("reverse", 0, 0),
        ("reverse", 1, 0),
    ],
)
def test_random_movements_keep_the_ledger_balanced(session, make_card, opening, steps):
    run = next(_runs)
    cards = [make_card(balance_fen=fen) for fen in opening]
    merchant = open_merchant(
        session, f"P{run:05d}", "属性测试", "Property test", MerchantKind.SHOP
    )
    session.commit()
    clearing = ledger.clearing_account(session, "wechat")
    # The model: what each wallet (by the card's index) and the merchant's payable
    # should hold.
    model: dict[int | str, int] = {**dict(enumerate(opening)), PAYABLE: 0}
    frozen = [False] * CARDS
    payments: list[tuple[int, int, str]] = []  # (card, amount, ref)
    # Each entry with what it did to the model.
    posted_entries: list[tuple[ledger.JournalEntry, dict[int | str, int]]] = []
    reversed_entries: set[int] = set()

    def apply(effect: dict[int | str, int], sign: int = 1) -> None:
        for account, delta in effect.items():
            model[account] += sign * delta

    for step, (action, index, amount) in enumerate(steps):
        ref = f"prop:{run}:{step}"
        if action == "debit_near":
            action, amount = "debit", max(model[index] + amount, 1)
        # What the model says must happen, decided before the call: "done",
        # "inactive" (CardNotActive) or "short" (InsufficientFunds).
        predicted = "done"
        try:
            if action == "credit":
                card = index
                predicted = "inactive" if frozen[card] else "done"
                result = credit_wallet(
                    session,
                    cards[card].number,
                    clearing,
                    amount,
                    kind=EntryKind.TOP_UP,
                    idempotency_ref=ref,
                )
                effect: dict[int | str, int] = {card: amount}
                apply(effect)
                posted_entries.append((result.entry, effect))
            elif action == "debit":
                card = index
                if frozen[card]:
                    predicted = "inactive"
                elif model[card] < amount:
                    predicted = "short"
                result = pay_from_wallet(
                    session, cards[card].number, merchant, amount, idempotency_ref=ref
                )
                effect = {card: -amount, PAYABLE: amount}
                apply(effect)
                payments.append((card, amount, ref))
                posted_entries.append((result.entry, effect))
            elif action == "refund" and payments:
                card, paid, _ = payments[index % len(payments)]
                amount = min(amount, paid)
                # The payable may go negative (a refund after the payout), so
                # only a card that is not active refuses a refund.
                if frozen[card]:
                    predicted = "inactive"
                result = credit_wallet(
                    session,
                    cards[card].number,
                    merchant.payable,
                    amount,
                    kind=EntryKind.REFUND,
                    idempotency_ref=ref,
                )
                effect = {card: amount, PAYABLE: -amount}
                apply(effect)
                posted_entries.append((result.entry, effect))
            elif action == "reverse" and posted_entries:
                # Reversing touches only the entry's own accounts; a frozen card
                # does not stop it, as a channel's reversal cannot be refused. It
                # takes back what the entry gave, so it is short when a wallet the
                # entry credited holds less than that now (a payable may go
                # negative).
                position = index % len(posted_entries)
                entry, effect = posted_entries[position]
                if position not in reversed_entries and any(
                    model[account] < delta
                    for account, delta in effect.items()
                    if delta > 0 and account != PAYABLE
                ):
                    predicted = "short"
                result = ledger.reverse_entry(session, entry, reason="property")
                assert result.created == (position not in reversed_entries)
                if result.created:
                    apply(effect, sign=-1)
                    reversed_entries.add(position)
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
                # A replay returns the first entry whatever the wallet holds now.
                card, amount, old_ref = payments[index % len(payments)]
                predicted = "inactive" if frozen[card] else "done"
                result = pay_from_wallet(
                    session,
                    cards[card].number,
                    merchant,
                    amount,
                    idempotency_ref=old_ref,
                )
                assert not result.created
            session.commit()
            outcome = "done"
        except CardNotActive:
            session.rollback()
            outcome = "inactive"
        except InsufficientFunds:
            session.rollback()
            outcome = "short"

        assert outcome == predicted, (step, action, model)
        for position, card_row in enumerate(cards):
            session.refresh(card_row.wallet)
            assert card_row.wallet.balance_fen == model[position]
            assert card_row.wallet.balance_fen >= 0
        session.refresh(merchant.payable)
        assert merchant.payable.balance_fen == model[PAYABLE]

    assert ledger.check_ledger(session) == []
