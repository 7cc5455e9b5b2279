"""Orders that payments flagged ``needs_review``, listed for finance.

When a channel reports something payments will not act on by itself (a payment for
a top-up or POS order already closed or failed, a different amount, a second
transaction, a card closed meanwhile), the order is flagged with a reason and no
money moves. No bill line need ever disagree with our books about such an order, so
the matching does not see it: finance reads the flags here, beside the
discrepancies. The flag belongs to payments and is never changed here: finance
marks a flagged order reviewed (``review``, who, when and what they found, kept
as an ``OrderReview``), which takes it off the list until payments flags it for
another reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from flask_babel import lazy_gettext
from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campus.database import utcnow
from campus.errors import Conflict, InvalidInput, NotFound
from payments.merchants import Merchant
from payments.pos.models import PosPayment
from payments.topups import TopUp
from reconciliation.models import OrderReview

logger = logging.getLogger(__name__)

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


def _unreviewed(kind: str, order: Any) -> Any:
    """No review covers the order's flag as it stands."""
    return ~exists().where(
        OrderReview.kind == kind,
        OrderReview.out_trade_no == order.out_trade_no,
        OrderReview.flag_reason == func.coalesce(order.review_reason, ""),
    )


def flagged_orders(session: Session, limit: int = LIMIT) -> list[FlaggedOrder]:
    """The flagged orders no review has covered yet, newest first."""
    top_ups = session.scalars(
        select(TopUp)
        .where(TopUp.needs_review.is_(True), _unreviewed("top_up", TopUp))
        .order_by(TopUp.created_at.desc())
        .limit(limit)
    )
    payments = session.execute(
        select(PosPayment, Merchant.code)
        .join(Merchant, Merchant.id == PosPayment.merchant_id)
        .where(
            PosPayment.needs_review.is_(True), _unreviewed("pos_payment", PosPayment)
        )
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


class NotFlagged(NotFound):
    code = "order_not_flagged"
    title = lazy_gettext("No such order is waiting for review")


class AlreadyReviewed(Conflict):
    code = "order_already_reviewed"
    title = lazy_gettext("This order was already reviewed")


_FLAGGED = {"top_up": TopUp, "pos_payment": PosPayment}


def review(
    session: Session, kind: str, out_trade_no: str, *, note: str, operator: str
) -> OrderReview:
    """Mark a flagged order reviewed, saying what was found; the caller commits.
    Refused for an order that is not flagged, and for one already reviewed for
    its flag's reason."""
    note = note.strip()
    if len(note) < 4:
        raise InvalidInput(lazy_gettext("Please say what you found."))
    model = _FLAGGED.get(kind)
    order = (
        session.scalar(select(model).where(model.out_trade_no == out_trade_no))
        if model is not None
        else None
    )
    if order is None or not order.needs_review:
        raise NotFlagged(kind=kind, out_trade_no=out_trade_no)
    reason = order.review_reason or ""
    done = session.scalar(
        select(OrderReview).where(
            OrderReview.kind == kind,
            OrderReview.out_trade_no == out_trade_no,
            OrderReview.flag_reason == reason,
        )
    )
    if done is not None:
        raise AlreadyReviewed(
            kind=kind, out_trade_no=out_trade_no, reviewed_by=done.reviewed_by
        )
    item = OrderReview(
        kind=kind,
        out_trade_no=out_trade_no,
        flag_reason=reason,
        note=note[:255],
        reviewed_by=operator,
        reviewed_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(item)
    except IntegrityError:
        # Another operator's review of the same flag committed first.
        raise AlreadyReviewed(kind=kind, out_trade_no=out_trade_no) from None
    logger.info(
        "flagged_order_reviewed",
        extra={"kind": kind, "out_trade_no": out_trade_no, "operator": operator},
    )
    return item


def recent_reviews(session: Session, limit: int = 50) -> list[OrderReview]:
    """The latest reviews, newest first: what finance decided, and who."""
    return list(
        session.scalars(
            select(OrderReview).order_by(OrderReview.reviewed_at.desc()).limit(limit)
        )
    )
