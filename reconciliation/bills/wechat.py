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
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence
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
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise BillFormatError(f"{column} is not an amount: {text[:32]!r}", line)
    sign, whole, fraction = match[1], match[2], match[3] or ""
    if fraction[2:].strip("0"):
        raise BillFormatError(f"{column} is not a whole number of fen: {text}", line)
    value = int(whole) * 100 + int(fraction[:2].ljust(2, "0"))
    return -value if sign else value


def parse_trade_bill(content: bytes | str) -> WechatBill:
    text = _decode(content)
    lines = [
        (number, raw) for number, raw in enumerate(text.splitlines(), 1) if raw.strip()
    ]
    if not lines:
        raise BillFormatError("the bill is empty")
    number, header_line = lines[0]
    headers = [header_name(cell) for cell in header_line.split(",")]
    while headers and not headers[-1]:
        headers.pop()
    missing = [name for name in _REQUIRED if name not in headers]
    if missing:
        raise BillFormatError(
            "not a WeChat Pay trade bill: no column " + ", ".join(missing), number
        )

    rows: list[WechatBillRow] = []
    summary: WechatBillSummary | None = None
    index = 1
    while index < len(lines):
        number, raw = lines[index]
        cells = _cells(raw)
        if header_name(cells[0]) == "总交易单数":
            if index + 1 >= len(lines):
                raise BillFormatError(
                    "truncated: summary header without values", number
                )
            summary = _summary([header_name(c) for c in cells], *lines[index + 1])
            if index + 2 < len(lines):
                raise BillFormatError("text after the summary", lines[index + 2][0])
            break
        rows.append(_row(headers, cells, number))
        index += 1
    if summary is None:
        raise BillFormatError("truncated: the summary section is missing")
    _check_totals(rows, summary)
    return WechatBill(tuple(rows), summary)


def _decode(content: bytes | str) -> str:
    if isinstance(content, str):
        return content.removeprefix("\ufeff")
    try:
        return content.decode("utf-8-sig")
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
            try:
                fields[field] = dt.datetime.strptime(
                    value, "%Y-%m-%d %H:%M:%S"
                ).replace(tzinfo=ZONE)
            except ValueError:
                raise BillFormatError(
                    f"交易时间 is not a time: {value!r}", line
                ) from None
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
    if summary.count != len(rows):
        raise BillFormatError(
            f"the summary counts {summary.count} rows, the bill has {len(rows)}"
        )
    for field in ("settled_fen", "refund_fen", "fee_fen"):
        total = sum(getattr(row, field) for row in rows)
        if total != getattr(summary, field):
            raise BillFormatError(
                f"rows add up to {total} fen of {field}, the summary says"
                f" {getattr(summary, field)}"
            )
