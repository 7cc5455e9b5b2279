"""Orders that payments flagged ``needs_review``, listed for finance.

When a channel reports something payments will not act on by itself (a payment for
a top-up or POS order already closed or failed, a different amount, a second
transaction, a card closed meanwhile), the order is flagged with a reason and no
money moves. No bill line need ever disagree with our books about such an order, so
the matching does not see it: finance reads the flags here, beside the
discrepancies. Read only: the flag belongs to payments.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from payments.merchants import Merchant
from payments.pos.models import PosPayment
from payments.topups import TopUp

LIMIT = 500
"""At most this many of each kind, newest first."""


@dataclasses.dataclass(frozen=True)
class FlaggedOrder:
    kind: str
    """``top_up`` or ``pos_payment``."""
    out_trade_no: str
    channel: str | None
    """``wechat`` or ``alipay``; None for a POS payment from a campus wallet."""
    state: str
    """The order's own state, e.g. ``closed`` for a top-up paid after it closed."""
    amount_fen: int
    transaction_id: str | None
    reason: str
    merchant: str | None
    created_at: dt.datetime


def flagged_orders(session: Session, limit: int = LIMIT) -> list[FlaggedOrder]:
    # A flag stays until someone changes the order: payments has no way yet to
    # mark one handled, so handled orders keep being listed (it would take a
    # "reviewed by, when, why" on each order and a button here).
    top_ups = session.scalars(
        select(TopUp)
        .where(TopUp.needs_review.is_(True))
        .order_by(TopUp.created_at.desc())
        .limit(limit)
    )
    payments = session.execute(
        select(PosPayment, Merchant.code)
        .join(Merchant, Merchant.id == PosPayment.merchant_id)
        .where(PosPayment.needs_review.is_(True))
        .order_by(PosPayment.created_at.desc())
        .limit(limit)
    )
    flagged = [
        FlaggedOrder(
            kind="top_up",
            out_trade_no=top_up.out_trade_no,
            channel=top_up.channel,
            state=top_up.state.value,
            amount_fen=top_up.amount_fen,
            transaction_id=top_up.transaction_id,
            reason=top_up.review_reason or "",
            merchant=None,
            created_at=top_up.created_at,
        )
        for top_up in top_ups
    ]
    flagged += [
        FlaggedOrder(
            kind="pos_payment",
            out_trade_no=payment.out_trade_no,
            channel=payment.channel,
            state=payment.state.value,
            amount_fen=payment.amount_fen,
            transaction_id=payment.transaction_id,
            reason=payment.review_reason or "",
            merchant=code,
            created_at=payment.created_at,
        )
        for payment, code in payments
    ]
    return sorted(flagged, key=lambda order: order.created_at, reverse=True)
