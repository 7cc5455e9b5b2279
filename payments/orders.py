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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Select
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


PaidRow = tuple[str, int, str | None, str | None]
"""``(out_trade_no, amount_fen, transaction_id, merchant)`` of a paid order."""


def driver_rows(
    session: Session, statement: Select[Any], batch: int = 10_000
) -> Iterator[list[tuple[Any, ...]]]:
    """``statement``'s rows as the database driver returns them, in the session's
    transaction, in lists of up to ``batch`` (a server-side cursor on PostgreSQL).

    Half of a night's read of its orders went to SQLAlchemy's rows and result
    processing; this skips both, so it is only for columns the driver already
    returns as they should be (text, integers). Parameters still go through their
    column types (enums to their values, aware times to what the backend stores).
    Lists rather than rows, so that a caller can turn a million rows into what it
    keeps without a line of Python running per row.
    """
    connection = session.connection()
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect)
    values = compiled.construct_params()
    for name, bind in compiled.binds.items():
        process = bind.type.bind_processor(dialect)
        if process is not None and name in values:
            values[name] = process(values[name])
    parameters: Any = values
    if compiled.positional:
        parameters = tuple(values[name] for name in compiled.positiontup or ())
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    if dialect.name == "postgresql":
        # Named: a server-side cursor, so that a million rows never sit in memory
        # at once.
        cursor = dbapi.cursor(name="driver_rows")  # type: ignore[call-arg]
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(compiled.string, parameters)
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        cursor.close()


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
    paid_select: Callable[[str, dt.datetime, dt.datetime], Select[PaidRow]] | None = (
        None
    )
    """``paid_select(channel, start, end)``: the orders ``paid_between`` gives, as
    a statement of ``PaidRow`` columns, whose rows a night's run reads a million
    of straight from the driver (``driver_rows``)."""
    record: Callable[[Session, str], OrderRecord | None] | None = None
    """One order by number, whatever its state."""
    close_unpaid: Callable[[Session, str, str], None] | None = None
    """``close_unpaid(session, out_trade_no, reason)``: end an order still
    waiting for its payment, so that a payment reported later is flagged, never
    credited (finance has decided about that money another way)."""


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
    "PaidRow",
    "RefundRecord",
    "order_kinds",
    "refund_kinds",
    "PaymentResult",
    "RefundKind",
    "RefundResult",
    "SettleOutcome",
    "driver_rows",
    "order_kind_for",
    "refund_kind_for",
    "register",
]
