"""Parse Alipay's daily trade bill: the zip that
``alipay.data.dataservice.bill.downloadurl.query`` points at.

The zip holds two GBK CSV files, named in GBK without the zip's UTF-8 flag:
``<pid>_<yyyymmdd>_业务明细.csv`` (one line per trade or refund) and
``<pid>_<yyyymmdd>_业务明细(汇总).csv`` (totals). Both have ``#`` comment lines
above and below the table. Detail values end with a tab, so that spreadsheets keep
long numbers as text. Columns are found by header name (full-width parentheses
and all), never by position; amounts become fen exactly, signed as the bill signs
them (refund lines and service fees are negative).

A file that is cut short (no end-of-list line, a short row, counts that disagree
with the footer) or otherwise malformed raises ``MalformedBill`` naming what is
wrong, and nothing is returned.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import logging
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from campus.errors import InvalidAmount
from payments.money import parse_fen

logger = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")

TRADE = "交易"
REFUND = "退款"

DETAIL_REQUIRED = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "退款批次号/请求号",
    "服务费（元）",
)
SUMMARY_REQUIRED = (
    "门店编号",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "服务费（元）",
    "实收净额（元）",
)
_END_OF_DETAIL = re.compile(r"#-+业务明细列表结束-+")
_FOOTER_COUNTS = re.compile(r"#交易合计：(\d+)笔，退款合计：(\d+)笔")
_ACCOUNT = re.compile(r"#账号：\[(\d+)\]")


class MalformedBill(ValueError):
    """The bill cannot be trusted as a whole; ``member`` names the file."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(f"{member}: {message}" if member else message)
        self.member = member


@dataclasses.dataclass(frozen=True)
class AlipayBillLine:
    trade_no: str
    """支付宝交易号."""
    out_trade_no: str
    """商户订单号: ours."""
    kind: str
    """业务类型: ``交易`` (a payment) or ``退款`` (a refund)."""
    subject: str
    created_at: dt.datetime
    finished_at: dt.datetime
    buyer_account: str
    """对方账户, masked by Alipay."""
    amount_fen: int
    """订单金额 in fen; negative on a refund line."""
    received_fen: int
    """商家实收 in fen; negative on a refund line."""
    fee_fen: int
    """服务费 in fen as the bill signs it: negative when charged, positive when a
    refund gives it back."""
    out_request_no: str
    """退款批次号/请求号: our refund number on a refund line, else empty."""
    columns: Mapping[str, str]
    """Every column of the line by its header, values stripped."""


@dataclasses.dataclass(frozen=True)
class AlipayBillSummary:
    trade_count: int
    refund_count: int
    amount_fen: int
    received_fen: int
    fee_fen: int
    net_fen: int
    """实收净额: received plus the (negative) fees."""


@dataclasses.dataclass(frozen=True)
class AlipayBill:
    account: str
    """The merchant's PID, from the ``#账号`` line."""
    day: dt.date
    lines: Sequence[AlipayBillLine]
    summary: AlipayBillSummary
    detail_name: str
    summary_name: str

    def totals_match_summary(self) -> bool:
        """Whether the detail lines add up to the summary's 合计 row."""
        lines = self.lines
        return (
            sum(1 for line in lines if line.kind == TRADE) == self.summary.trade_count
            and sum(1 for line in lines if line.kind == REFUND)
            == self.summary.refund_count
            and sum(line.amount_fen for line in lines) == self.summary.amount_fen
            and sum(line.received_fen for line in lines) == self.summary.received_fen
            and sum(line.fee_fen for line in lines) == self.summary.fee_fen
        )


def parse_alipay_bill(content: bytes) -> AlipayBill:
    """Parse the downloaded zip; raise ``MalformedBill`` if anything is off."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as error:
        raise MalformedBill("not a zip file (truncated download?)") from error
    with archive:
        members = {_member_name(info): info for info in archive.infolist()}
        detail_name = _one(members, lambda n: "业务明细" in n and "汇总" not in n)
        summary_name = _one(members, lambda n: "业务明细(汇总)" in n)
        try:
            detail_text = _decode(archive.read(members[detail_name]), detail_name)
            summary_text = _decode(archive.read(members[summary_name]), summary_name)
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise MalformedBill("damaged zip member") from error

    match = re.search(r"_(\d{8})_", detail_name)
    if match is None:
        raise MalformedBill("no date in the file name", detail_name)
    day = dt.datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=SHANGHAI).date()
    account, lines = _parse_detail(detail_text, detail_name)
    summary = _parse_summary(summary_text, summary_name)
    logger.info(
        "alipay_bill_parsed", extra={"day": day.isoformat(), "lines": len(lines)}
    )
    return AlipayBill(
        account=account,
        day=day,
        lines=lines,
        summary=summary,
        detail_name=detail_name,
        summary_name=summary_name,
    )


def _member_name(info: zipfile.ZipInfo) -> str:
    # Without the UTF-8 flag zipfile reads names as CP437; Alipay wrote GBK.
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except UnicodeError:
        return info.filename


def _one(members: Mapping[str, zipfile.ZipInfo], wanted: object) -> str:
    names = [name for name in members if wanted(name)]  # type: ignore[operator]
    if len(names) != 1:
        raise MalformedBill(
            f"expected one matching member, found {len(names)}: {sorted(members)}"
        )
    return names[0]


def _decode(raw: bytes, member: str) -> str:
    try:
        return raw.decode("gbk")
    except UnicodeDecodeError as error:
        raise MalformedBill("not GBK text", member) from error


def _table(
    text: str, member: str, required: Iterable[str]
) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """Comments, rows keyed by header, and the comment lines after the table."""
    before: list[str] = []
    rows: list[dict[str, str]] = []
    after: list[str] = []
    header: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            (after if header is not None else before).append(line.strip())
            continue
        if after:
            raise MalformedBill(
                f"line {number}: data after the closing comments", member
            )
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        if header is None:
            header = cells
            missing = [name for name in required if name not in header]
            if missing:
                raise MalformedBill(f"missing columns {missing}", member)
            continue
        if len(cells) != len(header):
            raise MalformedBill(
                f"line {number}: {len(cells)} fields, the header has {len(header)}",
                member,
            )
        rows.append(dict(zip(header, cells, strict=True)))
    if header is None:
        raise MalformedBill("no header line", member)
    return before, rows, after


def _parse_detail(text: str, member: str) -> tuple[str, list[AlipayBillLine]]:
    before, rows, after = _table(text, member, DETAIL_REQUIRED)
    account = next((m[1] for m in map(_ACCOUNT.fullmatch, before) if m), None)
    if account is None:
        raise MalformedBill("no #账号 line", member)
    if not any(_END_OF_DETAIL.fullmatch(line) for line in after):
        raise MalformedBill("no end-of-list line: the file is cut short", member)
    counts = next((m for m in map(_FOOTER_COUNTS.fullmatch, after) if m), None)
    if counts is None:
        raise MalformedBill("no #交易合计 line", member)
    lines = [_line(row, member, number) for number, row in enumerate(rows, 1)]
    trades = sum(1 for line in lines if line.kind == TRADE)
    if (trades, len(lines) - trades) != (int(counts[1]), int(counts[2])):
        raise MalformedBill(
            f"{trades} trades and {len(lines) - trades} refunds listed, the footer "
            f"says {counts[1]} and {counts[2]}",
            member,
        )
    return account, lines


def _line(row: Mapping[str, str], member: str, number: int) -> AlipayBillLine:
    kind = row["业务类型"]
    if kind not in (TRADE, REFUND):
        raise MalformedBill(f"row {number}: unknown 业务类型 {kind!r}", member)
    return AlipayBillLine(
        trade_no=_required(row, "支付宝交易号", member, number),
        out_trade_no=_required(row, "商户订单号", member, number),
        kind=kind,
        subject=row["商品名称"],
        created_at=_moment(row["创建时间"], member, number),
        finished_at=_moment(row["完成时间"], member, number),
        buyer_account=row["对方账户"],
        amount_fen=_fen(row["订单金额（元）"], member, number),
        received_fen=_fen(row["商家实收（元）"], member, number),
        fee_fen=_fen(row["服务费（元）"], member, number),
        out_request_no=row["退款批次号/请求号"],
        columns=dict(row),
    )


def _parse_summary(text: str, member: str) -> AlipayBillSummary:
    _, rows, _ = _table(text, member, SUMMARY_REQUIRED)
    totals = [row for row in rows if row["门店编号"] == "合计"]
    if len(totals) != 1:
        raise MalformedBill("expected one 合计 row", member)
    row = totals[0]
    try:
        trade_count = int(row["交易订单总笔数"])
        refund_count = int(row["退款订单总笔数"])
    except ValueError as error:
        raise MalformedBill("合计 counts are not numbers", member) from error
    return AlipayBillSummary(
        trade_count=trade_count,
        refund_count=refund_count,
        amount_fen=_fen(row["订单金额（元）"], member, 0),
        received_fen=_fen(row["商家实收（元）"], member, 0),
        fee_fen=_fen(row["服务费（元）"], member, 0),
        net_fen=_fen(row["实收净额（元）"], member, 0),
    )


def _required(row: Mapping[str, str], name: str, member: str, number: int) -> str:
    if not row[name]:
        raise MalformedBill(f"row {number}: empty {name}", member)
    return row[name]


def _fen(text: str, member: str, number: int) -> int:
    sign = -1 if text.startswith("-") else 1
    try:
        # A day's totals may pass the per-payment ceiling parse_fen guards.
        return sign * parse_fen(text.removeprefix("-"), allow_zero=True, maximum=10**15)
    except InvalidAmount as error:
        raise MalformedBill(
            f"row {number}: not an amount: {text[:20]!r}", member
        ) from error


def _moment(text: str, member: str, number: int) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    except ValueError as error:
        raise MalformedBill(
            f"row {number}: not a time: {text[:20]!r}", member
        ) from error
