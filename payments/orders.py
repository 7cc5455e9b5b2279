"""What every kind of order offers the code that learns about payments.

Notifications, the query jobs and reconciliation do not know top-ups from POS
payments: they find the order kind that owns an ``out_trade_no`` (or an
``out_refund_no``) here and call its settle function, the one way that kind of order
becomes paid. Each kind registers itself from ``payments.init_app``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session

from payments.channels.base import PaymentResult, RefundResult


class SettleOutcome(enum.StrEnum):
    CREDITED = "credited"
    """This call moved the order to paid and posted its journal entry."""

    ALREADY = "already"
    """The order was already settled by this transaction: nothing to do."""

    FLAGGED = "flagged"
    """Not posted: the order is marked for reconciliation (see its reason)."""

    NOT_PAID = "not_paid"
    """The channel does not say it was paid: nothing to settle."""


@dataclasses.dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as reconciliation sees it."""

    kind: str
    out_trade_no: str
    channel: str
    state: str
    """``paid``, ``unpaid`` (still waiting), ``closed``, ``failed``, ``reversed``."""
    amount_fen: int
    transaction_id: str | None
    paid_at: dt.datetime | None
    merchant: str | None = None
    """The merchant paid, for POS payments; top-ups have none."""


@dataclasses.dataclass(frozen=True, slots=True)
class RefundRecord:
    kind: str
    out_refund_no: str
    out_trade_no: str
    channel: str
    state: str
    """``succeeded``, ``processing``, ``failed``."""
    amount_fen: int
    refund_id: str | None
    refunded_at: dt.datetime | None
    merchant: str | None = None


@dataclasses.dataclass(frozen=True)
class OrderKind:
    name: str
    owns: Callable[[Session, str], bool]
    """Whether an ``out_trade_no`` is an order of this kind."""
    settle: Callable[..., SettleOutcome]
    """``settle(session, channel, result: PaymentResult, via=...)``."""
    paid_between: (
        Callable[[Session, str, dt.datetime, dt.datetime], Iterable[OrderRecord]] | None
    ) = None
    """Orders of a channel paid in ``[start, end)``, for reconciliation."""
    record: Callable[[Session, str], OrderRecord | None] | None = None
    """One order by number, whatever its state."""


@dataclasses.dataclass(frozen=True)
class RefundKind:
    name: str
    owns: Callable[[Session, str], bool]
    """Whether an ``out_refund_no`` is a refund of this kind."""
    settle: Callable[..., SettleOutcome]
    """``settle(session, channel, result: RefundResult, via=...)``."""
    refunded_between: (
        Callable[[Session, str, dt.datetime, dt.datetime], Iterable[RefundRecord]]
        | None
    ) = None
    record: Callable[[Session, str], RefundRecord | None] | None = None


_order_kinds: dict[str, OrderKind] = {}
_refund_kinds: dict[str, RefundKind] = {}


def register(kind: OrderKind | RefundKind) -> None:
    if isinstance(kind, OrderKind):
        _order_kinds[kind.name] = kind
    else:
        _refund_kinds[kind.name] = kind


def order_kinds() -> list[OrderKind]:
    return list(_order_kinds.values())


def refund_kinds() -> list[RefundKind]:
    return list(_refund_kinds.values())


def order_kind_for(session: Session, out_trade_no: str) -> OrderKind | None:
    for kind in _order_kinds.values():
        if kind.owns(session, out_trade_no):
            return kind
    return None


def refund_kind_for(session: Session, out_refund_no: str) -> RefundKind | None:
    for kind in _refund_kinds.values():
        if kind.owns(session, out_refund_no):
            return kind
    return None


__all__ = [
    "OrderKind",
    "OrderRecord",
    "RefundRecord",
    "order_kinds",
    "refund_kinds",
    "PaymentResult",
    "RefundKind",
    "RefundResult",
    "SettleOutcome",
    "order_kind_for",
    "refund_kind_for",
    "register",
]
