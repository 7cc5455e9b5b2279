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
    rows = [
        _row(scan.headers, cells, number)
        for number, raw in scan.rows()
        if (cells := scan.cells(number, raw)) is not None
    ]
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
_SUMMARY_NAME = "总交易单数".encode()
_CACHED = 65_536
"""Distinct cell texts remembered per bill (amounts, states): a day's bill repeats
a few thousand; a bill of all-different ones costs only the conversion."""


def read_trade_bill(content: bytes | str) -> Iterator[TradeEntry]:
    """The bill's detail rows one by one, as ``TradeEntry`` tuples, read from
    ``content`` a chunk at a time (no copy of the whole text is made).

    The checks are those of ``parse_trade_bill``: header by name, every row's
    shape, amounts and time, and, after the last row, the summary against the
    rows' count and totals. A bill that fails them raises ``BillFormatError``,
    possibly only once it is exhausted: the consumer must not act on any row
    before the iteration has ended without error."""
    scan = _Scan(content)
    tally = TradeTally()
    yield from _entries(scan, tally)
    summary = scan.summary
    assert summary is not None
    _check_sums(
        tally.count, tally.settled_fen, tally.refund_fen, tally.fee_fen, summary
    )


@dataclasses.dataclass
class TradeTally:
    """What the rows of a bill add up to."""

    count: int = 0
    settled_fen: int = 0
    refund_fen: int = 0
    fee_fen: int = 0


def _entries(scan: _Scan, tally: TradeTally) -> Iterator[TradeEntry]:
    """The rows ``scan`` reads, each checked; ``tally`` gets their totals."""
    headers = scan.headers
    width = len(headers)
    # A column the header lacks (none of these is required) reads as the empty
    # cell appended after the row's last.
    indexes = [headers.index(n) if n in headers else width for n in _ENTRY_COLUMNS]
    pick = operator.itemgetter(*indexes)
    # The row as WeChat Pay writes it, every field back-quoted and nothing around
    # the quotes, splits on ",`" straight into the values: that is the fast way
    # below, taken only where it gives exactly what the general way (str cells,
    # stripped) gives; any other row, and any value the fast way cannot vouch
    # for, goes the general way, which also raises the errors.
    commas = width - 1
    # The general way drops trailing empty cells and refuses a row left without a
    # required one: with the last required cell filled in, it drops none of them.
    last_required = max(headers.index(name) for name in _REQUIRED)
    # A summary header in the first column fails as a time when that column is
    # the time; in any other bill layout it is looked for.
    check_summary = headers[0] != "交易时间"
    amounts, texts = _Amounts(), _Texts()
    # The bill runs in time order: most rows share their second with the last.
    last_at: bytes | None = None
    traded_at = dt.datetime.min.replace(tzinfo=ZONE)
    count = settled_total = refund_total = fee_total = 0
    for number, raw in scan.rows():
        if raw[:1] == b"`" and raw.count(b",") == commas:
            cells = raw[1:].split(b",`")
            if (
                len(cells) == width
                and cells[last_required]
                and not (check_summary and _SUMMARY_NAME in cells[0])
            ):
                cells.append(b"")
                (at, transaction_id, out_trade_no, state, settled, refund_id,
                 out_refund_no, refunded, refund_state, fee, order
                 ) = pick(cells)  # fmt: skip
                try:
                    if at != last_at:
                        traded_at = _fast_time(at)
                        last_at = at
                    entry = (
                        number,
                        traded_at,
                        transaction_id.decode()
                        if transaction_id.isalnum()
                        else _fast_id(transaction_id),
                        out_trade_no.decode()
                        if out_trade_no.isalnum()
                        else _fast_id(out_trade_no),
                        texts[state],
                        amounts[settled],
                        texts[refund_id],
                        texts[out_refund_no],
                        amounts[refunded],
                        texts[refund_state],
                        amounts[fee],
                        amounts[order],
                    )
                except _Slow:
                    pass
                else:
                    count += 1
                    settled_total += entry[5]
                    refund_total += entry[8]
                    fee_total += entry[10]
                    yield entry
                    continue
        cells_text = scan.cells(number, raw)
        if cells_text is None:
            continue
        entry = _entry(cells_text, pick, width, number)
        count += 1
        settled_total += entry[5]
        refund_total += entry[8]
        fee_total += entry[10]
        yield entry
    tally.count += count
    tally.settled_fen += settled_total
    tally.refund_fen += refund_total
    tally.fee_fen += fee_total


def _entry(
    cells: list[str], pick: operator.itemgetter[str], width: int, number: int
) -> TradeEntry:
    """A detail row the general way: every cell stripped of spaces and its
    back-quote, each value checked."""
    if len(cells) < width:
        cells += [""] * (width - len(cells))
    cells.append("")
    (at, transaction_id, out_trade_no, state, settled, refund_id, out_refund_no,
     refunded, refund_state, fee, order) = [
        cell.strip().removeprefix("`").strip() for cell in pick(cells)
    ]  # fmt: skip
    if not out_trade_no or not transaction_id:
        raise BillFormatError("a row without 商户订单号 or 微信订单号", number)
    return (
        number,
        _time(at, number),
        transaction_id,
        out_trade_no,
        state,
        _amount(settled, number, "应结订单金额"),
        refund_id,
        out_refund_no,
        _amount(refunded, number, "退款金额"),
        refund_state,
        _amount(fee, number, "手续费"),
        _amount(order, number, "订单金额"),
    )


# The fast way's helpers raise _Slow for whatever they cannot vouch for, sending
# the row the general way. A value the general way would strip (spaces, tabs, any
# Unicode space) is never taken, so that only exact cells pass.


class _Slow(Exception):
    """This row goes the general way."""


class _Amounts(dict[bytes, int]):
    """Amount cells as fen, each distinct one converted once: a day's bill repeats
    a few thousand amounts over and over."""

    def __init__(self) -> None:
        super().__init__({b"": 0})

    def __missing__(self, cell: bytes) -> int:
        text = cell.decode()
        value = _fen_of(text) if text and text.strip() == text else None
        if value is None or value == _NOT_WHOLE:
            raise _Slow
        if len(self) < _CACHED:
            self[cell] = value
        return value


class _Texts(dict[bytes, str]):
    """Short text cells (states, refund numbers), each distinct one decoded once."""

    def __init__(self) -> None:
        super().__init__({b"": ""})

    def __missing__(self, cell: bytes) -> str:
        text = cell.decode()
        if text.strip() != text:
            raise _Slow
        if len(self) < _CACHED:
            self[cell] = text
        return text


def _fast_id(cell: bytes) -> str:
    """An id that is not only ASCII letters and digits, checked as text."""
    text = cell.decode()
    if not text or text.strip() != text:
        raise _Slow
    return text


def _fast_time(cell: bytes) -> dt.datetime:
    text = cell.decode()
    if text.strip() != text:
        raise _Slow
    try:
        return _time(text, 0)
    except BillFormatError:
        raise _Slow from None


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
    """The lines of a bill: its header, then each later line as bytes for the
    caller to split (``rows``) or to have split and checked for shape (``cells``),
    then its summary (set once ``rows()`` is exhausted)."""

    def __init__(
        self, content: bytes | str, part: tuple[list[str], int, int] | None = None
    ) -> None:
        """The whole bill; or with ``part`` (the bill's headers, and a line's
        start and number) the bill from that line on, which may lack the
        summary."""
        self.summary: WechatBillSummary | None = None
        self._whole = part is None
        if part is not None:
            self.headers, start, number = part
            self.header_line = 0
            self._lines = _lines(content, start, number - 1)
            return
        self._lines = _lines(content)
        first = self._next_nonblank()
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
        self.header_line = number

    def rows(self) -> Iterator[tuple[int, bytes]]:
        """Every line after the header, until ``cells`` has read the summary."""
        yield from self._lines
        if self.summary is None and self._whole:
            raise BillFormatError("truncated: the summary section is missing")

    def cells(self, number: int, raw: bytes) -> list[str] | None:
        """A detail row's cells, checked for shape; None for a blank line, and for
        the summary, which it reads with the rest of the bill."""
        line = _text(raw)
        if not line.strip():
            return None
        headers = self.headers
        width = len(headers)
        cells = line.split(",")
        while len(cells) > 1 and not cells[-1].strip().removeprefix("`").strip():
            cells.pop()
        first = cells[0]
        if "总交易单数" in first and header_name(first) == "总交易单数":
            values = self._next_nonblank()
            if values is None:
                raise BillFormatError(
                    "truncated: summary header without values", number
                )
            self.summary = _summary([header_name(c) for c in cells], *values)
            after = self._next_nonblank()
            if after is not None:
                raise BillFormatError("text after the summary", after[0])
            return None
        if len(cells) > width:
            raise BillFormatError(
                f"{len(cells)} fields where the header has {width}", number
            )
        if len(cells) < width:
            # Only trailing empty fields may be left out; a row cut short is not
            # that.
            absent = [h for h in headers[len(cells) :] if h in _REQUIRED]
            if absent:
                raise BillFormatError("row cut short, no " + ", ".join(absent), number)
        return cells

    def _next_nonblank(self) -> tuple[int, str] | None:
        for number, raw in self._lines:
            line = _text(raw)
            if line.strip():
                return number, line
        return None


_CHUNK = 1 << 20


def _lines(
    content: bytes | str, start: int | None = None, number: int = 0
) -> Iterator[tuple[int, bytes]]:
    """Numbered lines, without their ends, cut from ``content`` a chunk at a time;
    CR, LF and CRLF all end a line, as in the file WeChat Pay sends (CRLF) and in
    bills saved again by hand (LF). A UTF-8 byte-order mark is dropped. Each chunk
    is checked to be UTF-8 as a whole; a chunk that is not is read line by line,
    to refuse the bill at the first line that is not. From the line beginning at
    byte ``start``, numbered ``number + 1``, when given."""
    content = _encoded(content)
    if start is None:
        start = 3 if content.startswith(b"\xef\xbb\xbf") else 0
    size = len(content)
    while start < size:
        end = start + _CHUNK
        if end < size:
            # Cut after a line end, and never between the CR and LF of one.
            cut = content.rfind(b"\n", start, end)
            if cut < 0:
                cut = content.rfind(b"\r", start, end)
            if cut < 0:
                cut = content.find(b"\n", end, size)
                cut = size - 1 if cut < 0 else cut
            if content[cut : cut + 2] == b"\r\n":
                cut += 1
            end = cut + 1
        else:
            end = size
        chunk = content[start:end]
        start = end
        lines = chunk.splitlines()
        try:
            chunk.decode()
        except UnicodeDecodeError:
            for raw in lines:
                number += 1
                _text(raw)
                yield number, raw
            continue
        yield from enumerate(lines, number + 1)
        number += len(lines)


def _encoded(content: bytes | str) -> bytes:
    if isinstance(content, str):
        try:
            return content.encode()
        except UnicodeEncodeError as error:
            raise BillFormatError("the bill is not UTF-8 text") from error
    return content


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
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
            if not (value.isascii() and value.isdigit()):
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
