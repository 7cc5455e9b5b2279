"""Both channels' bills as one kind of line, so that matching knows no channel.

A WeChat Pay trade bill row is a payment (``交易状态`` SUCCESS, or REVOKED for a
reversed code payment, which the bill still lists) or a refund (REFUND, with the
refund's own number and amount); an Alipay bill line is a ``交易`` or a ``退款``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from reconciliation.bills.alipay import REFUND as ALIPAY_REFUND
from reconciliation.bills.alipay import AlipayBill
from reconciliation.bills.wechat import TradeEntry, WechatBill, read_trade_bill


class LineKind(enum.StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


class ChannelState(enum.StrEnum):
    """What the channel's bill says happened."""

    PAID = "paid"
    REVERSED = "reversed"
    """A code payment reversed or cancelled: listed, but no money kept."""
    REFUNDED = "refunded"
    """A refund line that went through."""
    REFUND_PENDING = "refund_pending"
    REFUND_FAILED = "refund_failed"


class BillLine(NamedTuple):
    """One line of a bill. A named tuple rather than a frozen dataclass: a run
    makes a million of them, and a frozen dataclass takes several times as long
    to build."""

    kind: LineKind
    state: ChannelState
    out_trade_no: str
    transaction_id: str
    amount_fen: int
    """Paid (payments) or refunded (refunds), always positive."""
    fee_fen: int
    """The channel's fee on this line, positive when charged, negative when a
    refund gives part of it back."""
    traded_at: dt.datetime
    out_refund_no: str = ""
    refund_id: str = ""
    line: int = 0
    """Where in the file, for people reading a discrepancy."""


_WECHAT_STATES = {
    "SUCCESS": ChannelState.PAID,
    "REVOKED": ChannelState.REVERSED,
    "REFUND": ChannelState.REFUNDED,
}
_WECHAT_REFUND_STATES = {
    "SUCCESS": ChannelState.REFUNDED,
    "PROCESSING": ChannelState.REFUND_PENDING,
    "FAIL": ChannelState.REFUND_FAILED,
    "CHANGE": ChannelState.REFUND_FAILED,
    "": ChannelState.REFUNDED,
}


def wechat_lines(bill: WechatBill) -> Iterator[BillLine]:
    for row in bill.rows:
        if row.trade_state == "REFUND":
            yield BillLine(
                kind=LineKind.REFUND,
                state=_WECHAT_REFUND_STATES.get(
                    row.refund_state.upper(), ChannelState.REFUND_PENDING
                ),
                out_trade_no=row.out_trade_no,
                transaction_id=row.transaction_id,
                amount_fen=abs(row.refund_fen),
                fee_fen=row.fee_fen,
                traded_at=row.traded_at,
                out_refund_no=row.out_refund_no,
                refund_id=row.refund_id,
                line=row.line,
            )
            continue
        yield BillLine(
            kind=LineKind.PAYMENT,
            state=_WECHAT_STATES.get(row.trade_state.upper(), ChannelState.PAID),
            out_trade_no=row.out_trade_no,
            transaction_id=row.transaction_id,
            amount_fen=row.order_fen or row.settled_fen,
            fee_fen=row.fee_fen,
            traded_at=row.traded_at,
            line=row.line,
        )


Take = Callable[[str, str, int, int], bool]
"""``take(out_trade_no, transaction_id, amount_fen, fee_fen)``: whether a paid
payment line was dealt with as it stands, so that no ``BillLine`` is built for it
(``DayMatch.take_paid``)."""


def wechat_bill_lines(
    content: bytes | str | Iterable[TradeEntry], take: Take | None = None
) -> Iterator[BillLine | int]:
    """The same lines as ``wechat_lines(parse_trade_bill(content))``, read one at a
    time without the full rows: what a nightly run over a million lines uses.
    ``content`` may also be ``read_trade_bill``'s entries, read elsewhere.
    Each paid payment line is first offered to ``take``; for one it takes, 1
    comes in place of the line (the count of lines it stands for, so that the
    lines that come still count the bill's rows). Raises ``BillFormatError`` as
    ``read_trade_bill`` does, possibly only at the end: act on none of the lines
    until the iteration has finished."""
    entries = read_trade_bill(content) if isinstance(content, bytes | str) else content
    refund_states = _WECHAT_REFUND_STATES
    states = _WECHAT_STATES
    payment, refund, paid = LineKind.PAYMENT, LineKind.REFUND, ChannelState.PAID
    # tuple.__new__ skips the named tuple's own __new__, a Python function that
    # costs more than the tuple.
    make = tuple.__new__
    for (
        line,
        traded_at,
        transaction_id,
        out_trade_no,
        trade_state,
        settled_fen,
        refund_id,
        out_refund_no,
        refund_fen,
        refund_state,
        fee_fen,
        order_fen,
    ) in entries:
        if trade_state == "REFUND":
            yield make(
                BillLine,
                (
                    refund,
                    refund_states.get(
                        refund_state.upper(), ChannelState.REFUND_PENDING
                    ),
                    out_trade_no,
                    transaction_id,
                    abs(refund_fen),
                    fee_fen,
                    traded_at,
                    out_refund_no,
                    refund_id,
                    line,
                ),
            )
        else:
            state = states.get(trade_state.upper(), paid)
            amount_fen = order_fen or settled_fen
            if (
                state is paid
                and take is not None
                and take(out_trade_no, transaction_id, amount_fen, fee_fen)
            ):
                yield 1
                continue
            yield make(
                BillLine,
                (
                    payment,
                    state,
                    out_trade_no,
                    transaction_id,
                    amount_fen,
                    fee_fen,
                    traded_at,
                    "",
                    "",
                    line,
                ),
            )


def offered_states(trade_states: Iterable[str]) -> list[str]:
    """Which of these WeChat Pay trade states make a payment line that ``take``
    is offered."""
    offered = _Offered()
    return [state for state in trade_states if offered[state]]


class _Offered(dict[str, bool]):
    """Whether a trade state makes a payment line ``take`` is offered, as
    ``wechat_bill_lines`` decides it, worked out once a state."""

    def __missing__(self, trade_state: str) -> bool:
        self[trade_state] = offered = (
            trade_state != "REFUND"
            and _WECHAT_STATES.get(trade_state.upper(), ChannelState.PAID)
            is ChannelState.PAID
        )
        return offered


def alipay_lines(bill: AlipayBill) -> Iterator[BillLine]:
    for number, line in enumerate(bill.lines, 1):
        refund = line.kind == ALIPAY_REFUND
        yield BillLine(
            kind=LineKind.REFUND if refund else LineKind.PAYMENT,
            state=ChannelState.REFUNDED if refund else ChannelState.PAID,
            out_trade_no=line.out_trade_no,
            transaction_id=line.trade_no,
            amount_fen=abs(line.amount_fen),
            # Alipay signs fees as money leaving the merchant: negative when charged.
            fee_fen=-line.fee_fen,
            traded_at=line.finished_at,
            out_refund_no=line.out_request_no if refund else "",
            line=number,
        )
