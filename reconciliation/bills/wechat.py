"""The WeChat Pay trade bill (交易账单), parsed by header name into typed rows.

The file is a header row, detail rows whose every field starts with a back-quote,
then a summary header (``总交易单数,…``) and one summary row. Columns are found by
their Chinese names, so added or reordered columns do not matter; back-quotes,
stray tabs and spaces around fields, a UTF-8 byte-order mark, CRLF line ends and
full-width parentheses or a ``(元)`` unit in header names are tolerated. Amounts
are yuan in the file and become integer fen here, exactly; a fee printed with five
decimals must be a whole number of fen (WeChat Pay rounds fees to the fen).

A bill without its summary, with a row cut short, or whose rows do not add up to
its summary is refused with ``BillFormatError``: a truncated download must stop
reconciliation, never pass for a quiet day.

``parse_trade_bill`` gives the whole bill with every column; ``read_trade_bill``
gives its rows one at a time with only what matching needs, decoding the file line
by line, for the nightly run over a million lines. Both make the same checks; the
streaming one can only check the summary after the last row, so its consumer acts
on nothing before the iteration has ended.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import io
import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Asia/Shanghai")

_AMOUNT = re.compile(r"(-?)(\d+)(?:\.(\d{1,5}))?")
_UNIT = re.compile(r"\((?:元|人民币|CNY)\)$")


class BillFormatError(ValueError):
    """The bill is malformed or truncated; ``line`` is 1-based where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


@dataclasses.dataclass(frozen=True)
class WechatBillRow:
    """One payment, reversal or refund line. Amounts are fen."""

    line: int
    traded_at: dt.datetime
    appid: str
    mchid: str
    transaction_id: str
    out_trade_no: str
    openid: str
    trade_type: str
    trade_state: str
    """SUCCESS, REFUND (a refund line) or REVOKED (a reversed code payment)."""
    currency: str
    settled_fen: int
    """应结订单金额: what the payment settles to the merchant."""
    voucher_fen: int
    refund_id: str
    out_refund_no: str
    refund_fen: int
    voucher_refund_fen: int
    refund_type: str
    refund_state: str
    description: str
    attach: str
    fee_fen: int
    """手续费: negative on a refund line (the fee given back)."""
    rate: str
    order_fen: int
    """订单金额: the order's amount including vouchers."""
    asked_refund_fen: int
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Columns this parser has no field for, by header name."""

    @property
    def is_refund(self) -> bool:
        return self.trade_state == "REFUND"


@dataclasses.dataclass(frozen=True)
class WechatBillSummary:
    count: int
    settled_fen: int
    refund_fen: int
    voucher_refund_fen: int
    fee_fen: int
    order_fen: int
    asked_refund_fen: int


@dataclasses.dataclass(frozen=True)
class WechatBill:
    rows: tuple[WechatBillRow, ...]
    summary: WechatBillSummary


# Header name → field, for the detail rows.
_COLUMNS = {
    "交易时间": "traded_at",
    "公众账号ID": "appid",
    "商户号": "mchid",
    "微信订单号": "transaction_id",
    "商户订单号": "out_trade_no",
    "用户标识": "openid",
    "交易类型": "trade_type",
    "交易状态": "trade_state",
    "货币种类": "currency",
    "应结订单金额": "settled_fen",
    "代金券金额": "voucher_fen",
    "微信退款单号": "refund_id",
    "商户退款单号": "out_refund_no",
    "退款金额": "refund_fen",
    "充值券退款金额": "voucher_refund_fen",
    "退款类型": "refund_type",
    "退款状态": "refund_state",
    "商品名称": "description",
    "商户数据包": "attach",
    "手续费": "fee_fen",
    "费率": "rate",
    "订单金额": "order_fen",
    "申请退款金额": "asked_refund_fen",
}
_REQUIRED = (
    "交易时间",
    "微信订单号",
    "商户订单号",
    "交易状态",
    "应结订单金额",
    "退款金额",
    "手续费",
    "订单金额",
)
_SUMMARY = {
    "总交易单数": "count",
    "应结订单总金额": "settled_fen",
    "退款总金额": "refund_fen",
    "充值券退款总金额": "voucher_refund_fen",
    "手续费总金额": "fee_fen",
    "订单总金额": "order_fen",
    "申请退款总金额": "asked_refund_fen",
}
_OPTIONAL_SUMMARY = {"充值券退款总金额", "申请退款总金额", "订单总金额"}


def header_name(cell: str) -> str:
    """``应结订单金额（元）`` → ``应结订单金额``."""
    name = cell.strip().strip("`").strip().replace("（", "(").replace("）", ")")
    return _UNIT.sub("", name).strip()


def cell_value(cell: str) -> str:
    return cell.strip().removeprefix("`").strip()


def fen(text: str, *, line: int, column: str) -> int:
    """Yuan in the bill → fen, exactly; no float on the way."""
    value = _fen_of(text)
    if value is None:
        raise BillFormatError(f"{column} is not an amount: {text[:32]!r}", line)
    if value == _NOT_WHOLE:
        raise BillFormatError(f"{column} is not a whole number of fen: {text}", line)
    return value


_NOT_WHOLE = -(10**30)
"""What ``_fen_of`` answers for an amount with fractions of a fen."""


# A day's bill repeats a few thousand amounts (prices, top-up sizes, their fees)
# over and over: converting each distinct text once is much of the parser's speed
# on a million lines. Bounded, so a bill of all-different amounts costs only the
# conversion.
@functools.lru_cache(maxsize=65_536)
def _fen_of(text: str) -> int | None:
    match = _AMOUNT.fullmatch(text)
    if match is None:
        return None
    sign, whole, fraction = match[1], match[2], match[3] or ""
    if fraction[2:].strip("0"):
        return _NOT_WHOLE
    value = int(whole) * 100 + int(fraction[:2].ljust(2, "0"))
    return -value if sign else value


def parse_trade_bill(content: bytes | str) -> WechatBill:
    """The whole bill as typed rows, every column kept. Reconciliation reads big
    bills with ``read_trade_bill`` instead, which keeps only what matching needs."""
    scan = _Scan(content)
    rows = [_row(scan.headers, cells, number) for number, cells in scan.rows()]
    assert scan.summary is not None
    _check_totals(rows, scan.summary)
    return WechatBill(tuple(rows), scan.summary)


TradeEntry = tuple[int, dt.datetime, str, str, str, int, str, str, int, str, int, int]
"""One detail row, lean: (line, traded_at, transaction_id, out_trade_no,
trade_state, settled_fen, refund_id, out_refund_no, refund_fen, refund_state,
fee_fen, order_fen). A tuple because a million of them pass through one run."""

_ENTRY_COLUMNS = (
    "交易时间",
    "微信订单号",
    "商户订单号",
    "交易状态",
    "应结订单金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "退款状态",
    "手续费",
    "订单金额",
)


def read_trade_bill(content: bytes | str) -> Iterator[TradeEntry]:
    """The bill's detail rows one by one, as ``TradeEntry`` tuples, decoded line
    by line from ``content`` (no copy of the whole text is made).

    The checks are those of ``parse_trade_bill``: header by name, every row's
    shape, amounts and time, and, after the last row, the summary against the
    rows' count and totals. A bill that fails them raises ``BillFormatError``,
    possibly only once it is exhausted: the consumer must not act on any row
    before the iteration has ended without error."""
    scan = _Scan(content)
    headers = scan.headers
    width = len(headers)
    # A column the header lacks (none of these is required) reads as the empty
    # cell appended after the row's last.
    pick = operator.itemgetter(
        *(headers.index(name) if name in headers else width for name in _ENTRY_COLUMNS)
    )
    count = settled_total = refund_total = fee_total = 0
    for number, cells in scan.rows():
        if len(cells) < width:
            cells += [""] * (width - len(cells))
        cells.append("")
        (at, transaction_id, out_trade_no, state, settled, refund_id, out_refund_no,
         refunded, refund_state, fee, order) = [
            cell.strip().removeprefix("`").strip() for cell in pick(cells)
        ]  # fmt: skip
        if not out_trade_no or not transaction_id:
            raise BillFormatError("a row without 商户订单号 or 微信订单号", number)
        settled_fen = _amount(settled, number, "应结订单金额")
        refund_fen = _amount(refunded, number, "退款金额")
        fee_fen = _amount(fee, number, "手续费")
        count += 1
        settled_total += settled_fen
        refund_total += refund_fen
        fee_total += fee_fen
        yield (
            number,
            _time(at, number),
            transaction_id,
            out_trade_no,
            state,
            settled_fen,
            refund_id,
            out_refund_no,
            refund_fen,
            refund_state,
            fee_fen,
            _amount(order, number, "订单金额"),
        )
    summary = scan.summary
    assert summary is not None
    _check_sums(count, settled_total, refund_total, fee_total, summary)


def _amount(text: str, line: int, column: str) -> int:
    value = _fen_of(text or "0")
    if value is None or value == _NOT_WHOLE:
        return fen(text, line=line, column=column)
    return value


def _time(value: str, line: int) -> dt.datetime:
    # fromisoformat with the offset is many times faster than strptime and
    # replace(tzinfo=ZoneInfo): Asia/Shanghai has kept +08:00 since 1991, so the
    # fixed offset is the same instant. The shape test keeps it as strict as
    # "%Y-%m-%d %H:%M:%S" (fromisoformat alone takes more forms).
    if len(value) == 19 and value[4] == "-" and value[7] == "-" and value[10] == " ":
        try:
            return dt.datetime.fromisoformat(value + "+08:00")
        except ValueError:
            pass
    raise BillFormatError(f"交易时间 is not a time: {value!r}", line)


class _Scan:
    """The lines of a bill: its header, then its detail rows as cells, checked for
    shape, then its summary (set once ``rows()`` is exhausted)."""

    def __init__(self, content: bytes | str) -> None:
        self._lines = _nonblank_lines(content)
        first = next(self._lines, None)
        if first is None:
            raise BillFormatError("the bill is empty")
        number, header_line = first
        headers = [header_name(cell) for cell in header_line.split(",")]
        while headers and not headers[-1]:
            headers.pop()
        missing = [name for name in _REQUIRED if name not in headers]
        if missing:
            raise BillFormatError(
                "not a WeChat Pay trade bill: no column " + ", ".join(missing), number
            )
        self.headers = headers
        self.summary: WechatBillSummary | None = None

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        headers = self.headers
        width = len(headers)
        for number, raw in self._lines:
            cells = raw.split(",")
            while len(cells) > 1 and not cells[-1].strip().removeprefix("`").strip():
                cells.pop()
            first = cells[0]
            if "总交易单数" in first and header_name(first) == "总交易单数":
                values = next(self._lines, None)
                if values is None:
                    raise BillFormatError(
                        "truncated: summary header without values", number
                    )
                self.summary = _summary([header_name(c) for c in cells], *values)
                after = next(self._lines, None)
                if after is not None:
                    raise BillFormatError("text after the summary", after[0])
                return
            if len(cells) > width:
                raise BillFormatError(
                    f"{len(cells)} fields where the header has {width}", number
                )
            if len(cells) < width:
                # Only trailing empty fields may be left out; a row cut short is
                # not that.
                absent = [h for h in headers[len(cells) :] if h in _REQUIRED]
                if absent:
                    raise BillFormatError(
                        "row cut short, no " + ", ".join(absent), number
                    )
            yield number, cells
        raise BillFormatError("truncated: the summary section is missing")


def _nonblank_lines(content: bytes | str) -> Iterator[tuple[int, str]]:
    """Numbered lines of text, decoded as they are read; CR, LF and CRLF all end
    a line, as in the file WeChat Pay sends (CRLF) and in bills saved again by
    hand (LF)."""
    stream: io.TextIOBase
    if isinstance(content, str):
        stream = io.StringIO(content.removeprefix("\ufeff"), newline=None)
    else:
        # BytesIO shares the bytes (no copy); the wrapper decodes in chunks.
        stream = io.TextIOWrapper(
            io.BytesIO(content), encoding="utf-8-sig", newline=None
        )
    try:
        for number, raw in enumerate(stream, 1):
            raw = raw.rstrip("\n")
            if raw.strip():
                yield number, raw
    except UnicodeDecodeError as error:
        raise BillFormatError("the bill is not UTF-8 text") from error


def _cells(raw: str) -> list[str]:
    cells = raw.split(",")
    while len(cells) > 1 and not cell_value(cells[-1]):
        cells.pop()
    return cells


def _row(headers: Sequence[str], cells: Sequence[str], line: int) -> WechatBillRow:
    if len(cells) > len(headers):
        raise BillFormatError(
            f"{len(cells)} fields where the header has {len(headers)}", line
        )
    if len(cells) < len(headers):
        # Only trailing empty fields may be left out; a row cut short is not that.
        absent = [h for h in headers[len(cells) :] if h in _REQUIRED]
        if absent:
            raise BillFormatError("row cut short, no " + ", ".join(absent), line)
    values = {
        name: cell_value(cell) for name, cell in zip(headers, cells, strict=False)
    }
    fields: dict[str, object] = {"line": line, "extra": {}}
    for name, field in _COLUMNS.items():
        value = values.get(name, "")
        if field.endswith("_fen"):
            fields[field] = fen(value or "0", line=line, column=name)
        elif field == "traded_at":
            fields[field] = _time(value, line)
        else:
            fields[field] = value
    fields["extra"] = {k: v for k, v in values.items() if k not in _COLUMNS}
    if not fields["out_trade_no"] or not fields["transaction_id"]:
        raise BillFormatError("a row without 商户订单号 or 微信订单号", line)
    return WechatBillRow(**fields)  # type: ignore[arg-type]


def _summary(headers: Sequence[str], line: int, raw: str) -> WechatBillSummary:
    values = {
        name: cell_value(cell) for name, cell in zip(headers, _cells(raw), strict=False)
    }
    fields: dict[str, int] = {}
    for name, field in _SUMMARY.items():
        value = values.get(name)
        if value is None or value == "":
            if name in _OPTIONAL_SUMMARY:
                fields[field] = 0
                continue
            raise BillFormatError(f"summary without {name}", line)
        if field == "count":
            if not value.isdigit():
                raise BillFormatError(f"总交易单数 is not a count: {value!r}", line)
            fields[field] = int(value)
        else:
            fields[field] = fen(value, line=line, column=name)
    return WechatBillSummary(**fields)


def _check_totals(rows: Sequence[WechatBillRow], summary: WechatBillSummary) -> None:
    _check_sums(
        len(rows),
        sum(row.settled_fen for row in rows),
        sum(row.refund_fen for row in rows),
        sum(row.fee_fen for row in rows),
        summary,
    )


def _check_sums(
    count: int,
    settled_fen: int,
    refund_fen: int,
    fee_fen: int,
    summary: WechatBillSummary,
) -> None:
    if summary.count != count:
        raise BillFormatError(
            f"the summary counts {summary.count} rows, the bill has {count}"
        )
    for field, total in (
        ("settled_fen", settled_fen),
        ("refund_fen", refund_fen),
        ("fee_fen", fee_fen),
    ):
        if total != getattr(summary, field):
            raise BillFormatError(
                f"rows add up to {total} fen of {field}, the summary says"
                f" {getattr(summary, field)}"
            )
