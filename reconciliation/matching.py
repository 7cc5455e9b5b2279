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
fee_mismatch       手续费不符 / fees         the day's fees differ from the contract
=================  ======================  =========================================

A channel-only payment for an order of ours that is still waiting for payment is
``repairable``: the notification was lost, and settling it through the order's own
settle function is safe. So is a refund the channel lists as done, for the same
amount, that we still see processing: it settles through the refund's own settle
function. Everything else waits for a finance operator.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import operator
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from itertools import repeat
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from payments.orders import OrderRecord, PaidRow, RefundRecord
from reconciliation.bills.columns import TradeColumns
from reconciliation.lines import (
    BillLine,
    ChannelState,
    LineKind,
    offered_states,
    wechat_bill_lines,
)


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


class DayOrder(NamedTuple):
    """One of the orders we settled on the bill's day, as the nightly run reads a
    million of them: only what matching compares. An order that does not match
    becomes an ``OrderRecord`` (``record``) for its finding.

    The fields are a ``PaidRow``'s, in its order, so that a row from the
    database becomes a ``DayOrder`` as it is, without a line of Python per row
    (``day_orders``); its kind and channel are those of its class, one per kind
    and channel (``day_order_type``)."""

    out_trade_no: str
    amount_fen: int
    transaction_id: str | None
    merchant: str | None
    kind = ""
    channel = ""
    state = "paid"
    """What every order of the day is (a class attribute, not a field)."""

    def record(self) -> OrderRecord:
        # paid_at is left out: nothing sorts or records by it for an order of the
        # day itself (it only tells an earlier day's order, looked up, apart).
        return OrderRecord(
            self.kind,
            self.out_trade_no,
            self.channel,
            "paid",
            self.amount_fen,
            self.transaction_id,
            None,
            self.merchant,
        )


@functools.cache
def day_order_type(kind: str, channel: str) -> type[DayOrder]:
    """The ``DayOrder`` class of orders of ``kind`` paid through ``channel``."""
    return type(
        f"DayOrder[{kind}, {channel}]",
        (DayOrder,),
        {"__slots__": (), "kind": kind, "channel": channel},
    )


def day_orders(
    into: MutableMapping[str, OrderRecord | DayOrder],
    rows: list[PaidRow],
    kind: str,
    channel: str,
) -> None:
    """Put ``rows`` of ``kind`` and ``channel`` into ``into`` as ``DayOrder``s by
    their numbers. Every step is a builtin mapped over the list: no Python runs
    per row, which is a second of a night's million."""
    orders = list(map(tuple.__new__, repeat(day_order_type(kind, channel)), rows))
    into.update(zip(map(_NUMBER, orders), orders, strict=True))


_NUMBER = operator.itemgetter(0)


class DayOrderColumns:
    """The orders we settled on the bill's day, by column, as the nightly run
    reads a million of them for a bill read into columns (``bills.columns``):
    ``DayMatch.take_columns`` matches them all at once, and only the orders it
    leaves become ``DayOrder``s. Order numbers are unique across kinds (each
    kind has its own prefix)."""

    SCHEMA = pa.schema(
        [
            ("out_trade_no", pa.string()),
            ("amount_fen", pa.int64()),
            ("transaction_id", pa.string()),
            ("merchant", pa.string()),
            ("type", pa.int16()),
        ]
    )

    def __init__(self) -> None:
        self._batches: list[pa.RecordBatch] = []
        self._types: list[type[DayOrder]] = []

    def add(self, rows: list[PaidRow], kind: str, channel: str) -> None:
        """``rows`` of ``kind`` paid through ``channel``, as ``day_orders`` takes
        them."""
        if rows:
            numbers, amounts, transactions, merchants = zip(*rows, strict=True)
            self.add_table(
                pa.table(
                    [
                        pa.array(numbers, pa.string()),
                        pa.array(amounts, pa.int64()),
                        pa.array(transactions, pa.string()),
                        pa.array(merchants, pa.string()),
                    ],
                    names=_DAY_ORDER_FIELDS,
                ),
                kind,
                channel,
            )

    def add_table(self, orders: pa.Table, kind: str, channel: str) -> None:
        """Orders of ``kind`` paid through ``channel``, by column: out_trade_no,
        amount_fen, transaction_id and merchant."""
        if not orders.num_rows:
            return
        order_type = day_order_type(kind, channel)
        if order_type not in self._types:
            self._types.append(order_type)
        code = pa.scalar(self._types.index(order_type), pa.int16())
        orders = orders.select(list(_DAY_ORDER_FIELDS)).append_column(
            "type", pa.repeat(code, orders.num_rows)
        )
        self._batches.extend(orders.cast(self.SCHEMA).to_batches())

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self._batches, schema=self.SCHEMA)

    def drop(self, numbers: Iterable[str]) -> list[str]:
        """Leave out the orders of ``numbers``; which of them there were."""
        numbers = list(numbers)
        if not numbers or not self._batches:
            return []
        table = self.table()
        present = pc.is_in(table["out_trade_no"], value_set=pa.array(numbers))
        dropped = table.filter(present)["out_trade_no"].to_pylist()
        if dropped:
            self._batches = table.filter(pc.invert(present)).to_batches()
        return dropped

    def into(self, paid: MutableMapping[str, OrderRecord | DayOrder]) -> None:
        """Put the orders into ``paid`` as ``DayOrder``s, as ``day_orders``
        would."""
        self.into_orders(paid, self.table(), self._types)

    @property
    def types(self) -> Sequence[type[DayOrder]]:
        """The ``DayOrder`` class of each ``type`` code."""
        return self._types

    @staticmethod
    def into_orders(
        paid: MutableMapping[str, OrderRecord | DayOrder],
        table: pa.Table,
        types: Sequence[type[DayOrder]],
    ) -> None:
        for code, order_type in enumerate(types):
            of_type = table.filter(pc.equal(table["type"], code))
            if of_type.num_rows:
                columns = (of_type[name].to_pylist() for name in _DAY_ORDER_FIELDS)
                rows = list(zip(*columns, strict=True))
                day_orders(paid, rows, order_type.kind, order_type.channel)


_DAY_ORDER_FIELDS = ("out_trade_no", "amount_fen", "transaction_id", "merchant")


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
        yield _refund_finding(line, refund)
    for refund in ours.values():
        yield Finding(
            FindingKind.REFUND_MISMATCH,
            refund.out_refund_no,
            ours=refund,
            note="refunded here, not in the bill",
        )


def _listed_again(line: BillLine, ours: OrderRecord | RefundRecord) -> Finding:
    """A line for an order (or refund) of the day that an earlier line of the
    same bill took: the channel lists it twice, for finance to look at."""
    if line.kind is LineKind.PAYMENT:
        kind, key = FindingKind.STATUS_MISMATCH, line.out_trade_no
    else:
        kind, key = FindingKind.REFUND_MISMATCH, line.out_refund_no
    return Finding(kind, key, line, ours, note="listed again in the same bill")


def _refund_finding(line: BillLine, refund: RefundRecord | None) -> Finding:
    key = line.out_refund_no or line.refund_id
    if refund is None:
        return Finding(
            FindingKind.REFUND_MISMATCH,
            key,
            line,
            note="a refund at the channel we have no record of",
        )
    if line.state is ChannelState.REFUNDED and refund.state != "succeeded":
        return Finding(
            FindingKind.REFUND_MISMATCH,
            key,
            line,
            refund,
            repairable=refund.state == "processing"
            and refund.amount_fen == line.amount_fen,
            note=f"refunded at the channel, {refund.state} here",
        )
    if line.state is not ChannelState.REFUNDED and refund.state == "succeeded":
        return Finding(
            FindingKind.REFUND_MISMATCH,
            key,
            line,
            refund,
            note=f"{line.state.value} at the channel, succeeded here",
        )
    if refund.amount_fen != line.amount_fen:
        return Finding(
            FindingKind.REFUND_MISMATCH,
            key,
            line,
            refund,
            note=f"{line.amount_fen} fen at the channel, {refund.amount_fen} here",
        )
    return Finding(FindingKind.MATCHED, key, line, refund)


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
    return _fee_finding(charged, expected, count, rate_per_10000)


def _fee_finding(
    charged: int, expected: int, count: int, rate_per_10000: int
) -> Finding | None:
    if abs(charged - expected) > 0:
        return Finding(
            FindingKind.FEE_MISMATCH,
            "fees",
            note=f"{charged} fen charged on {count} payments, {expected} fen at the "
            f"contract rate of {rate_per_10000 / 100:.2f} %",
        )
    return None


class DayMatch:
    """Matching a bill fed one line at a time, for days of a million lines.

    The same findings as ``match_payments``, ``match_refunds`` and
    ``check_fees`` together, but a line that matches one of the day's own orders
    is only counted, not kept: ``matched`` says how many, ``merchant_fees``
    keeps what settlement needs of them. ``add`` touches no database; lines whose
    order (or refund) is not among the day's wait in memory for ``finish``, which
    looks them up, so a caller can refuse the bill before anything is read
    beyond the day's orders."""

    def __init__(
        self,
        paid: MutableMapping[str, OrderRecord | DayOrder],
        refunded: MutableMapping[str, RefundRecord],
        fee_rate_per_10000: int,
        day: DayOrderColumns | None = None,
        window: tuple[dt.datetime, dt.datetime] | None = None,
    ) -> None:
        """``paid`` and ``refunded`` by number; the day's orders may also come by
        column (``day``), for ``take_columns``: none of those is in ``paid``.
        ``window``: the day's start and end, when ``paid`` and ``refunded`` hold
        every order paid and refund made in it, so that an order or refund looked
        up in it is one an earlier line took."""
        self._paid = paid
        self._window = window
        self._day = day
        self._refunded = refunded
        self._rate = fee_rate_per_10000
        self._elsewhere: list[BillLine] = []
        self._findings: list[Finding] = []
        self.lines = 0
        self.matched = 0
        self.fee_fen = 0
        """The channel's fees over every line, as the bill states them."""
        self.merchant_fees: list[tuple[str, str, int]] = []
        """(number, merchant, fee) of each matched merchant payment (our order
        number, fee charged) and refund (our refund number, fee given back)."""
        self._charged = self._expected = self._charged_lines = 0

    def take_paid(
        self, out_trade_no: str, transaction_id: str, amount_fen: int, fee_fen: int
    ) -> bool:
        """Count a paid payment line (its number, transaction, amount and fee) that
        matches one of the day's own orders, as ``add`` would, without the line
        being built: nearly every line of a day is one. False, and nothing
        counted, for any other: that line goes to ``add``."""
        if self._day is not None:
            self._spill()
        order = self._paid.get(out_trade_no)
        if (
            order is None
            or order.state != "paid"
            or order.amount_fen != amount_fen
            or (order.transaction_id and order.transaction_id != transaction_id)
        ):
            return False
        # What _payment_finding calls matched, decided without the finding.
        del self._paid[out_trade_no]
        self.lines += 1
        self.matched += 1
        self._charged_lines += 1
        self.fee_fen += fee_fen
        self._charged += fee_fen
        self._expected += expected_fee_fen(amount_fen, self._rate)
        if order.merchant:
            self.merchant_fees.append((out_trade_no, order.merchant, fee_fen))
        return True

    def take_columns(self, bill: TradeColumns) -> Iterator[BillLine | int]:
        """Match a bill read into columns against the day's orders by column at
        once: take every paid payment line that ``take_paid`` would take, put the
        day's orders left into the orders by number, then give how many lines were
        taken and every other line in the bill's order, as ``wechat_bill_lines``
        gives them, for ``add``.

        A line is taken only if it is the one payment line of its order in the
        bill; where an order has several, they all go to ``add`` in order, which
        takes the first as it would have. So the findings, counts and fees are
        those of taking line by line."""
        rows = bill.rows
        columns, self._day = self._day or DayOrderColumns(), None
        day = columns.table()
        at = pc.index_in(rows["out_trade_no"], value_set=day["out_trade_no"])
        states = rows["trade_state"]
        offered = pc.is_in(
            states,
            value_set=pa.array(
                offered_states(pc.unique(states).to_pylist()), pa.string()
            ),
        )
        amount = pc.if_else(
            pc.not_equal(rows["order_fen"], 0), rows["order_fen"], rows["settled_fen"]
        )
        their_transaction = pc.take(day["transaction_id"], at)
        takeable = pc.and_kleene(
            pc.and_kleene(offered, pc.equal(amount, pc.take(day["amount_fen"], at))),
            pc.or_kleene(
                pc.or_kleene(
                    pc.is_null(their_transaction), pc.equal(their_transaction, "")
                ),
                pc.equal(their_transaction, rows["transaction_id"]),
            ),
        )
        takeable = pc.fill_null(takeable, False)
        # An order with more than one payment line in the bill: all of them line
        # by line.
        paying = pc.drop_null(pc.filter(at, pc.not_equal(states, "REFUND")))
        if len(pc.unique(paying)) != len(paying):
            counted = pc.value_counts(paying)
            repeated = pc.filter(
                counted.field("values"), pc.greater(counted.field("counts"), 1)
            )
            takeable = pc.and_(
                takeable,
                pc.invert(pc.fill_null(pc.is_in(at, value_set=repeated), False)),
            )
        fees = pc.filter(rows["fee_fen"], takeable)
        count = len(fees)
        fees_fen = _sum(fees)
        expected = _sum(
            pc.filter(amount, takeable),
            lambda amount_fen: expected_fee_fen(amount_fen, self._rate),
        )
        self.lines += count
        self.matched += count
        self._charged_lines += count
        self.fee_fen += fees_fen
        self._charged += fees_fen
        self._expected += expected
        taken_at = pc.filter(at, takeable)
        merchants = pc.take(day["merchant"], taken_at)
        if merchants.null_count < len(merchants):
            # As ``take_paid``: an order with a merchant (not null, not empty).
            for_merchant = pc.fill_null(pc.not_equal(merchants, ""), False)
            numbers = pc.filter(rows["out_trade_no"], takeable)
            self.merchant_fees.extend(
                zip(
                    pc.filter(numbers, for_merchant).to_pylist(),
                    pc.filter(merchants, for_merchant).to_pylist(),
                    pc.filter(fees, for_merchant).to_pylist(),
                    strict=True,
                )
            )
        if count < day.num_rows:
            left = pc.invert(
                pc.is_in(pa.array(range(day.num_rows), pa.int32()), value_set=taken_at)
            )
            columns.into_orders(self._paid, day.filter(left), columns.types)
        if count:
            yield count
        if count < rows.num_rows:
            yield from wechat_bill_lines(_entries(bill, pc.invert(takeable)))

    def _of_the_day(self, at: dt.datetime | None) -> bool:
        return (
            at is not None and self._window is not None
            and self._window[0] <= at < self._window[1]
        )  # fmt: skip

    def _spill(self) -> None:
        """The day's orders by column, by number: for line by line matching."""
        if self._day is not None:
            self._day.into(self._paid)
            self._day = None

    def add(self, line: BillLine) -> None:
        if self._day is not None:
            self._spill()
        if (
            line.kind is LineKind.PAYMENT
            and line.state is ChannelState.PAID
            and self.take_paid(
                line.out_trade_no, line.transaction_id, line.amount_fen, line.fee_fen
            )
        ):
            return
        self.lines += 1
        self.fee_fen += line.fee_fen
        if line.kind is LineKind.PAYMENT:
            if line.state is ChannelState.PAID:
                self._charged += line.fee_fen
                self._expected += expected_fee_fen(line.amount_fen, self._rate)
                self._charged_lines += 1
            order = self._paid.pop(line.out_trade_no, None)
            if order is None:
                self._elsewhere.append(line)
                return
            if isinstance(order, DayOrder):
                order = order.record()
            finding = _payment_finding(line, order)
        else:
            refund = self._refunded.pop(line.out_refund_no, None)
            if refund is None:
                self._elsewhere.append(line)
                return
            finding = _refund_finding(line, refund)
        if finding.kind is FindingKind.MATCHED:
            self._count_match(finding)
        else:
            self._findings.append(finding)

    def _count_match(self, finding: Finding) -> None:
        self.matched += 1
        fee = merchant_fee(finding)
        if fee is not None:
            self.merchant_fees.append(fee)

    def finish(
        self,
        lookup_order: Callable[[str], OrderRecord | None],
        lookup_refund: Callable[[str], RefundRecord | None],
    ) -> list[Finding]:
        """Every finding but the matches already counted: lines of orders not paid
        on the day (a matched one among them is returned too, as it may close a
        held item), then ours-only orders and refunds, then the fee check."""
        if self._day is not None:
            self._spill()
        findings = self._findings
        for line in self._elsewhere:
            if line.kind is LineKind.PAYMENT:
                order = lookup_order(line.out_trade_no)
                if self._of_the_day(order and order.paid_at):
                    # Its order was among the day's and an earlier line of the bill
                    # took it: matching it again would count the money twice.
                    finding = _listed_again(line, order)
                else:
                    finding = _payment_finding(line, order)
            else:
                refund = lookup_refund(line.out_refund_no)
                if self._of_the_day(refund and refund.refunded_at):
                    finding = _listed_again(line, refund)
                else:
                    finding = _refund_finding(line, refund)
            if finding.kind is FindingKind.MATCHED:
                self._count_match(finding)
            findings.append(finding)
        self._elsewhere = []
        findings.extend(
            Finding(
                FindingKind.OURS_ONLY,
                number,
                ours=order.record() if isinstance(order, DayOrder) else order,
            )
            for number, order in self._paid.items()
        )
        findings.extend(
            Finding(
                FindingKind.REFUND_MISMATCH,
                refund.out_refund_no,
                ours=refund,
                note="refunded here, not in the bill",
            )
            for refund in self._refunded.values()
        )
        self._paid.clear()
        self._refunded.clear()
        fee = _fee_finding(
            self._charged, self._expected, self._charged_lines, self._rate
        )
        if fee is not None:
            findings.append(fee)
        return findings


def merchant_fee(finding: Finding) -> tuple[str, str, int] | None:
    """What a merchant's statement takes of a matched (or repaired) line: (our
    order or refund number, merchant, fee), or None for a line of no merchant's."""
    ours, line = finding.ours, finding.line
    if ours is None or not ours.merchant or line is None:
        return None
    if isinstance(ours, OrderRecord) and line.kind is LineKind.PAYMENT:
        return (finding.key, ours.merchant, line.fee_fen)
    if isinstance(ours, RefundRecord) and line.fee_fen:
        # The part of the payment's fee the channel gives back on a refund
        # (negative): credited to the merchant, keyed by our refund number.
        return (finding.key, ours.merchant, line.fee_fen)
    return None


def _sum(
    column: pa.Array | pa.ChunkedArray, of: Callable[[int], int] | None = None
) -> int:
    """The exact sum of an integer column (or of ``of`` each value), in Python
    integers: from each distinct value and how often it comes."""
    counted = pc.value_counts(column)
    values = counted.field("values").to_pylist()
    if of is not None:
        values = [of(value) for value in values]
    return sum(
        value * count
        for value, count in zip(
            values, counted.field("counts").to_pylist(), strict=True
        )
    )


def _entries(bill: TradeColumns, which: pa.Array | pa.ChunkedArray) -> Iterator[tuple]:
    """The rows of ``bill`` that ``which`` marks, in order, as the line reader's
    ``TradeEntry`` tuples."""
    rows = bill.rows.filter(which)
    lines = pc.add(pc.indices_nonzero(which), bill.first_line).to_pylist()
    times = bill.times
    traded_at = [times[text] for text in rows["traded_at"].to_pylist()]
    return zip(
        lines,
        traded_at,
        *(rows[name].to_pylist() for name in _ENTRY_FIELDS),
        strict=True,
    )


_ENTRY_FIELDS = (
    "transaction_id",
    "out_trade_no",
    "trade_state",
    "settled_fen",
    "refund_id",
    "out_refund_no",
    "refund_fen",
    "refund_state",
    "fee_fen",
    "order_fen",
)
