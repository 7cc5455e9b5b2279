"""Matching a channel's bill against our orders, both ways, with no database.

Each bill line and each of our orders for the day ends up in exactly one finding,
sorted into a kind defined by (our state, the channel's state, the amounts). Finance
reads them under their usual names as well:

=================  ======================  =========================================
kind               finance label           meaning
=================  ======================  =========================================
matched            对平 / matched           both sides agree
channel_only       长款 / channel only      the channel took money for an order we
                                           have not settled (or do not know)
ours_only          短款 / ours only         we settled an order the bill does not list
amount_mismatch    金额不符 / amount         both list it, with different amounts
status_mismatch    状态不符 / status         e.g. a reversed code payment we think paid
refund_mismatch    退款不符 / refund         a refund missing on one side or different
fee_mismatch       手续费不符 / fees         the day's fees differ from the contract rate
=================  ======================  =========================================

A channel-only payment for an order of ours that is still waiting for payment is
``repairable``: the notification was lost, and settling it through the order's own
settle function is safe. Everything else waits for a finance operator.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Iterator, MutableMapping

from payments.orders import OrderRecord, RefundRecord
from reconciliation.lines import BillLine, ChannelState, LineKind


class FindingKind(enum.StrEnum):
    MATCHED = "matched"
    CHANNEL_ONLY = "channel_only"
    OURS_ONLY = "ours_only"
    AMOUNT_MISMATCH = "amount_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    REFUND_MISMATCH = "refund_mismatch"
    FEE_MISMATCH = "fee_mismatch"


FINANCE_LABELS = {
    FindingKind.MATCHED: "对平 / matched",
    FindingKind.CHANNEL_ONLY: "长款 / channel only",
    FindingKind.OURS_ONLY: "短款 / ours only",
    FindingKind.AMOUNT_MISMATCH: "金额不符 / amount mismatch",
    FindingKind.STATUS_MISMATCH: "状态不符 / status mismatch",
    FindingKind.REFUND_MISMATCH: "退款不符 / refund mismatch",
    FindingKind.FEE_MISMATCH: "手续费不符 / fee mismatch",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    key: str
    """What the finding is about: our order number, or our refund number."""
    line: BillLine | None = None
    ours: OrderRecord | RefundRecord | None = None
    repairable: bool = False
    note: str = ""


def match_payments(
    lines: Iterable[BillLine],
    ours: MutableMapping[str, OrderRecord],
    lookup: Callable[[str], OrderRecord | None],
) -> Iterator[Finding]:
    """Findings for the payment lines of a bill. ``ours`` holds the orders we
    settled on the bill's day, by order number, and is emptied as lines match;
    ``lookup`` finds any other order of ours (unpaid, or settled another day)."""
    for line in lines:
        if line.kind is not LineKind.PAYMENT:
            continue
        order = ours.pop(line.out_trade_no, None) or lookup(line.out_trade_no)
        yield _payment_finding(line, order)
    for order in ours.values():
        yield Finding(FindingKind.OURS_ONLY, order.out_trade_no, ours=order)


def _payment_finding(line: BillLine, order: OrderRecord | None) -> Finding:
    key = line.out_trade_no
    if line.state is ChannelState.REVERSED:
        if order is not None and order.state == "paid":
            return Finding(
                FindingKind.STATUS_MISMATCH,
                key,
                line,
                order,
                note="the channel reversed a payment we count as paid",
            )
        return Finding(FindingKind.MATCHED, key, line, order)
    if order is None:
        return Finding(
            FindingKind.CHANNEL_ONLY,
            key,
            line,
            note="the channel took money for an order we do not know",
        )
    if order.state != "paid":
        return Finding(
            FindingKind.CHANNEL_ONLY,
            key,
            line,
            order,
            repairable=order.state == "unpaid" and order.amount_fen == line.amount_fen,
            note=f"paid at the channel, {order.state} here",
        )
    if order.amount_fen != line.amount_fen:
        return Finding(
            FindingKind.AMOUNT_MISMATCH,
            key,
            line,
            order,
            note=f"{line.amount_fen} fen at the channel, {order.amount_fen} here",
        )
    if order.transaction_id and order.transaction_id != line.transaction_id:
        return Finding(
            FindingKind.STATUS_MISMATCH,
            key,
            line,
            order,
            note="settled here with another transaction",
        )
    return Finding(FindingKind.MATCHED, key, line, order)


def match_refunds(
    lines: Iterable[BillLine],
    ours: MutableMapping[str, RefundRecord],
    lookup: Callable[[str], RefundRecord | None],
) -> Iterator[Finding]:
    """The same for refund lines, keyed by our refund number."""
    for line in lines:
        if line.kind is not LineKind.REFUND:
            continue
        refund = ours.pop(line.out_refund_no, None) or lookup(line.out_refund_no)
        key = line.out_refund_no or line.refund_id
        if refund is None:
            yield Finding(
                FindingKind.REFUND_MISMATCH,
                key,
                line,
                note="a refund at the channel we have no record of",
            )
        elif line.state is ChannelState.REFUNDED and refund.state != "succeeded":
            yield Finding(
                FindingKind.REFUND_MISMATCH,
                key,
                line,
                refund,
                repairable=refund.state == "processing",
                note=f"refunded at the channel, {refund.state} here",
            )
        elif line.state is not ChannelState.REFUNDED and refund.state == "succeeded":
            yield Finding(
                FindingKind.REFUND_MISMATCH,
                key,
                line,
                refund,
                note=f"{line.state.value} at the channel, succeeded here",
            )
        elif refund.amount_fen != line.amount_fen:
            yield Finding(
                FindingKind.REFUND_MISMATCH,
                key,
                line,
                refund,
                note=f"{line.amount_fen} fen at the channel, {refund.amount_fen} here",
            )
        else:
            yield Finding(FindingKind.MATCHED, key, line, refund)
    for refund in ours.values():
        yield Finding(
            FindingKind.REFUND_MISMATCH,
            refund.out_refund_no,
            ours=refund,
            note="refunded here, not in the bill",
        )


def expected_fee_fen(amount_fen: int, rate_per_10000: int) -> int:
    """A channel's fee on an amount at a rate in hundredths of a percent (60 is
    0.6 %), rounded half up to the fen as the channels do."""
    return (amount_fen * rate_per_10000 + 5_000) // 10_000


def check_fees(lines: Iterable[BillLine], rate_per_10000: int) -> Finding | None:
    """One finding when the day's fees differ from the contract rate by more than
    the per-line rounding can explain."""
    charged = expected = count = 0
    for line in lines:
        if line.kind is LineKind.PAYMENT and line.state is ChannelState.PAID:
            charged += line.fee_fen
            expected += expected_fee_fen(line.amount_fen, rate_per_10000)
            count += 1
    if abs(charged - expected) > 0:
        return Finding(
            FindingKind.FEE_MISMATCH,
            "fees",
            note=f"{charged} fen charged on {count} payments, {expected} fen at the "
            f"contract rate of {rate_per_10000 / 100:.2f} %",
        )
    return None
