"""POS payments and refunds as reconciliation sees them (``payments.orders``).

The night's run asks each order kind for the orders of a channel paid in a window
and for single orders by number; these answer for ``pos_payments`` and
``pos_refunds``, reading columns rather than ORM objects, as a day's bill can be
long. A reversed code payment is reported as ``reversed``, so that a bill still
listing it (as WeChat does for a reversed codepay) sorts as a status mismatch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from campus.database import utcnow
from payments.merchants import Merchant
from payments.orders import (
    OrderKind,
    OrderRecord,
    RefundKind,
    RefundRecord,
)
from payments.pos import refunds, service
from payments.pos.models import PaymentState, PosPayment, PosRefund, RefundState

_STATES = {
    PaymentState.AWAITING: "unpaid",
    PaymentState.PAYING: "unpaid",
    PaymentState.SUCCEEDED: "paid",
    PaymentState.FAILED: "failed",
    PaymentState.REVERSED: "reversed",
}

_COLUMNS = (
    PosPayment.out_trade_no,
    PosPayment.channel,
    PosPayment.state,
    PosPayment.amount_fen,
    PosPayment.transaction_id,
    PosPayment.paid_at,
    Merchant.code,
)


def _order(row) -> OrderRecord:  # type: ignore[no-untyped-def]
    number, channel, state, amount, transaction_id, paid_at, merchant = row
    return OrderRecord(
        "pos_payment",
        number,
        channel or "",
        _STATES[state],
        amount,
        transaction_id,
        paid_at,
        merchant=merchant,
    )


def _paid(channel: str, start: dt.datetime, end: dt.datetime, *columns: Any) -> Any:
    """The POS payments of a channel paid in ``[start, end)``: ``paid_between``
    and ``paid_select`` read the same ones."""
    return (
        select(*columns)
        .join(Merchant, Merchant.id == PosPayment.merchant_id)
        .where(
            PosPayment.channel == channel,
            PosPayment.state == PaymentState.SUCCEEDED,
            PosPayment.paid_at >= start,
            PosPayment.paid_at < end,
        )
    )


def paid_between(
    session: Session, channel: str, start: dt.datetime, end: dt.datetime
) -> Iterator[OrderRecord]:
    rows = session.execute(
        _paid(channel, start, end, *_COLUMNS).execution_options(yield_per=10_000)
    )
    for row in rows:
        yield _order(row)


def paid_select(channel: str, start: dt.datetime, end: dt.datetime) -> Any:
    return _paid(
        channel,
        start,
        end,
        PosPayment.out_trade_no,
        PosPayment.amount_fen,
        PosPayment.transaction_id,
        Merchant.code,
    )


def record(session: Session, out_trade_no: str) -> OrderRecord | None:
    row = session.execute(
        select(*_COLUMNS)
        .join(Merchant, Merchant.id == PosPayment.merchant_id)
        .where(PosPayment.out_trade_no == out_trade_no)
    ).first()
    return _order(row) if row is not None else None


_REFUND_COLUMNS = (
    PosRefund.out_refund_no,
    PosPayment.out_trade_no,
    PosRefund.channel,
    PosRefund.state,
    PosRefund.amount_fen,
    PosRefund.refund_id,
    PosRefund.finished_at,
    Merchant.code,
)


def _refund(row) -> RefundRecord:  # type: ignore[no-untyped-def]
    number, out_trade_no, channel, state, amount, refund_id, finished, merchant = row
    return RefundRecord(
        "pos_refund",
        number,
        out_trade_no,
        channel,
        state.value,
        amount,
        refund_id,
        finished if state is RefundState.SUCCEEDED else None,
        merchant=merchant,
    )


def _refund_query():  # type: ignore[no-untyped-def]
    return (
        select(*_REFUND_COLUMNS)
        .join(PosPayment, PosPayment.id == PosRefund.payment_id)
        .join(Merchant, Merchant.id == PosPayment.merchant_id)
    )


def refunded_between(
    session: Session, channel: str, start: dt.datetime, end: dt.datetime
) -> Iterator[RefundRecord]:
    rows = session.execute(
        _refund_query()
        .where(
            PosRefund.channel == channel,
            PosRefund.state == RefundState.SUCCEEDED,
            PosRefund.finished_at >= start,
            PosRefund.finished_at < end,
        )
        .execution_options(yield_per=10_000)
    )
    for row in rows:
        yield _refund(row)


def refund_record(session: Session, out_refund_no: str) -> RefundRecord | None:
    row = session.execute(
        _refund_query().where(PosRefund.out_refund_no == out_refund_no)
    ).first()
    return _refund(row) if row is not None else None


def close_unpaid(session: Session, out_trade_no: str, reason: str) -> None:
    """End a payment still ``paying`` or ``awaiting`` as failed (a later success
    from the channel is then flagged: ``settle_payment``)."""
    payment = service.lock_payment(session, out_trade_no)
    if payment.state in {PaymentState.PAYING, PaymentState.AWAITING}:
        payment.state = PaymentState.FAILED
        payment.failure_code = "closed_by_finance"
        payment.failure_message = reason[:255]
        payment.finished_at = utcnow()


ORDER_KIND = OrderKind(
    "pos_payment",
    service.owns,
    service.settle_payment,
    paid_between=paid_between,
    paid_select=paid_select,
    record=record,
    close_unpaid=close_unpaid,
)
REFUND_KIND = RefundKind(
    "pos_refund",
    refunds.owns,
    refunds.settle_refund,
    refunded_between=refunded_between,
    record=refund_record,
)
