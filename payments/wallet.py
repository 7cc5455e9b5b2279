"""Money in and out of a card's wallet, each movement one journal entry.

These functions run inside the caller's transaction and never commit. The card row
is locked first, so that a freeze and a payment on the same card are serialised; the
ledger's conditional update then keeps the wallet from going below zero.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from payments.cards import lock_card_for_payment, require_active
from payments.ledger import AccountLike, AccountRef, EntryKind, Posted, transfer
from payments.merchants import Merchant


def credit_wallet(
    session: Session,
    card_number: str,
    source: AccountLike,
    amount_fen: int,
    *,
    kind: EntryKind,
    idempotency_ref: str,
    order_ref: str | None = None,
    memo: str | None = None,
    created_by: str | None = None,
) -> Posted:
    """Money into an active card's wallet from ``source`` (a channel's clearing
    account for a top-up, a merchant's payable for a refund)."""
    card = lock_card_for_payment(session, card_number)
    require_active(card)
    return transfer(
        session,
        kind=kind,
        idempotency_ref=idempotency_ref,
        source=source,
        destination=card.wallet,
        amount_fen=amount_fen,
        order_ref=order_ref,
        memo=memo,
        created_by=created_by,
    )


def pay_from_wallet(
    session: Session,
    card_number: str,
    merchant: Merchant | AccountRef,
    amount_fen: int,
    *,
    idempotency_ref: str,
    order_ref: str | None = None,
    memo: str | None = None,
    created_by: str | None = None,
    savepoint: bool = True,
) -> Posted:
    """An active card pays a merchant (or straight to its payable account, see
    ``merchants.payable_of``) from its wallet. Raises ``InsufficientFunds`` and
    posts nothing when the wallet holds less than ``amount_fen`` (with
    ``savepoint=False``, see ``ledger.post_entry``: the caller rolls back)."""
    card = lock_card_for_payment(session, card_number)
    require_active(card)
    return transfer(
        session,
        kind=EntryKind.PAYMENT,
        idempotency_ref=idempotency_ref,
        source=card.wallet,
        destination=merchant if isinstance(merchant, AccountRef) else merchant.payable,
        amount_fen=amount_fen,
        order_ref=order_ref,
        memo=memo,
        created_by=created_by,
        savepoint=savepoint,
    )
