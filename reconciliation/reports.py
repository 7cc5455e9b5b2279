"""Finance's reports, as CSV and as PDF: a day's run summary and a merchant's
settlement statements.

Each report is read once into a plain object (``DaySummary``, ``StatementReport``)
that both formats render, so the CSV and the PDF of a report say the same thing.
Amounts stay in fen until they are printed; the PDF prints yuan, the CSV keeps fen
(as the API does) so that a spreadsheet adds them exactly.

Every piece of text in a PDF, Latin as well as Chinese, is set in the project's CJK
TrueType font, which reportlab embeds as a subset: the standard PDF fonts are never
used, so every font in the file is embedded and prints the same everywhere.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from reportlab.graphics.shapes import Drawing, Line, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campus.fonts import register_cjk_font
from payments.merchants import Merchant
from payments.money import format_yuan
from reconciliation.matching import FINANCE_LABELS, FindingKind
from reconciliation.models import Discrepancy, DiscrepancyStatus, ReconciliationRun
from reconciliation.settlement import MerchantStatement

CHANNELS = ("wechat", "alipay")
CHANNEL_LABELS = {
    "wechat": "微信支付 / WeChat Pay",
    "alipay": "支付宝 / Alipay",
    "campus": "校园卡 / Campus card",
}
OUTCOME_LABELS = {
    "repaired": "自动修复 / repaired",
    "held": "挂起待后续账单 / held for a later bill",
    "matched_late": "延迟对平 / matched late",
    "released": "挂起到期 / hold expired",
}
"""What a run did beyond sorting, under the labels finance reads."""
STILL_OPEN = (DiscrepancyStatus.OPEN, DiscrepancyStatus.HELD)
"""Discrepancies nobody has closed yet: open ones, and held ones still waiting."""

COLUMNS = (
    "id",
    "channel",
    "day",
    "kind",
    "label",
    "status",
    "out_trade_no",
    "transaction_id",
    "out_refund_no",
    "our_state",
    "channel_state",
    "our_amount_fen",
    "channel_amount_fen",
    "note",
    "resolution",
    "reason",
    "resolved_by",
)
"""A discrepancy's columns in the API and in CSV, both sides side by side."""


def discrepancy_out(item: Discrepancy) -> dict[str, Any]:
    row = {
        column: getattr(item, column, None) for column in COLUMNS if column != "label"
    }
    row["status"] = item.status.value
    row["label"] = FINANCE_LABELS[FindingKind(item.kind)]
    return row


# -- the 30-day chart -----------------------------------------------------------

INK = colors.HexColor("#1d2430")
RULE = colors.HexColor("#9aa6b8")
HEADER_FILL = colors.HexColor("#e8edf5")

CHART_DAYS = 30
MATCHED_COLOUR = colors.HexColor("#2f7d4f")
OPEN_COLOUR = colors.HexColor("#d9822b")


@dataclasses.dataclass(frozen=True)
class ChartDay:
    day: dt.date
    ran: bool
    """Whether any channel's run of the day exists; a day without one is empty."""
    matched: int
    """Lines both sides agree on, over every channel's run of the day."""
    still_open: int
    """The day's discrepancies nobody has closed yet (open or held), as of now:
    the bar shrinks as finance resolves them."""


def chart(session: Session, last: dt.date, days: int = CHART_DAYS) -> list[ChartDay]:
    """Matched versus still open for each calendar day of the ``days`` ending on
    ``last``, oldest first."""
    first = last - dt.timedelta(days=days - 1)
    matched: dict[dt.date, int] = {}
    for day, counts in session.execute(
        select(ReconciliationRun.day, ReconciliationRun.counts).where(
            ReconciliationRun.day >= first, ReconciliationRun.day <= last
        )
    ):
        found = json.loads(counts) if counts else {}
        matched[day] = matched.get(day, 0) + found.get(FindingKind.MATCHED.value, 0)
    still_open = dict(
        session.execute(
            select(Discrepancy.day, func.count())
            .where(
                Discrepancy.day >= first,
                Discrepancy.day <= last,
                Discrepancy.status.in_(STILL_OPEN),
            )
            .group_by(Discrepancy.day)
        ).all()
    )
    return [
        ChartDay(day, day in matched, matched.get(day, 0), still_open.get(day, 0))
        for day in (first + dt.timedelta(days=n) for n in range(days))
    ]


def bar_heights(days: Sequence[ChartDay]) -> list[tuple[float, float]]:
    """(matched, still open) of each day as fractions of the tallest day. A day's
    few open items beside a million matched lines would be too thin to see, so any
    open item is drawn at least 4 % high: the chart is there to show that something
    is open, the numbers beside it say how much."""
    peak = max((d.matched + d.still_open for d in days), default=0) or 1
    heights = []
    for day in days:
        still_open = day.still_open / peak
        if day.still_open:
            still_open = max(still_open, 0.04)
        heights.append((min(day.matched / peak, 1 - still_open), still_open))
    return heights


def chart_drawing(
    days: Sequence[ChartDay], font: str, width: float, height: float = 40 * mm
) -> Drawing:
    """The chart as a reportlab drawing: a stacked bar per day, matched below and
    still open above, a grey tick where a day had no run."""
    drawing = Drawing(width, height)
    # The renderer sets its default font (Helvetica, not embedded) before the
    # first shape unless the drawing names another.
    drawing.initialFontName = font
    drawing.initialFontSize = 6
    axis, top = 9.0, height - 10.0
    step = width / max(len(days), 1)
    for index, (day, (matched, still_open)) in enumerate(
        zip(days, bar_heights(days), strict=True)
    ):
        x = index * step + step * 0.15
        bar = step * 0.7
        if not day.ran:
            drawing.add(Line(x, axis + 1, x + bar, axis + 1, strokeColor=RULE))
        if matched:
            drawing.add(
                Rect(
                    x,
                    axis,
                    bar,
                    matched * (top - axis),
                    fillColor=MATCHED_COLOUR,
                    strokeColor=None,
                )
            )
        if still_open:
            drawing.add(
                Rect(
                    x,
                    axis + matched * (top - axis),
                    bar,
                    still_open * (top - axis),
                    fillColor=OPEN_COLOUR,
                    strokeColor=None,
                )
            )
        if index % 5 == 0 or index == len(days) - 1:
            drawing.add(
                String(x, 0, day.day.strftime("%m-%d"), fontName=font, fontSize=6)
            )
    drawing.add(Line(0, axis, width, axis, strokeColor=RULE, strokeWidth=0.5))
    drawing.add(
        String(
            0,
            height - 7,
            "绿 对平 / green matched · 橙 未结 / orange still open · "
            "灰线 未运行 / grey line no run",
            fontName=font,
            fontSize=6.5,
            fillColor=INK,
        )
    )
    return drawing


# -- the day's run summary ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KindCount:
    name: str
    label: str
    by_channel: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_channel.values())


@dataclasses.dataclass(frozen=True)
class DaySummary:
    day: dt.date
    runs: list[dict[str, Any]]
    """Each channel's run of the day: channel, state, lines, bill_sha256, error."""
    counts: list[KindCount]
    """Every kind of finding, then what the runs did (repaired, held, …)."""
    fees_fen: dict[str, int]
    """The channels' fees as the bills state them, in fen, by channel."""
    still_open: list[dict[str, Any]]
    """The day's open and held discrepancies, as ``discrepancy_out`` gives them."""
    chart: list[ChartDay]
    """The 30 calendar days ending on the summary's day."""

    @property
    def channels(self) -> list[str]:
        ran = {run["channel"] for run in self.runs}
        return [c for c in CHANNELS if c in ran] + sorted(ran - set(CHANNELS))


def day_summary(session: Session, day: dt.date) -> DaySummary:
    runs = session.scalars(
        select(ReconciliationRun)
        .where(ReconciliationRun.day == day)
        .order_by(ReconciliationRun.channel)
    ).all()
    by_channel = {run.channel: json.loads(run.counts or "{}") for run in runs}
    labels: dict[str, str] = {kind.value: FINANCE_LABELS[kind] for kind in FindingKind}
    labels.update(OUTCOME_LABELS)
    counts = [
        KindCount(
            name,
            label,
            {channel: found.get(name, 0) for channel, found in by_channel.items()},
        )
        for name, label in labels.items()
    ]
    items = session.scalars(
        select(Discrepancy)
        .where(Discrepancy.day == day, Discrepancy.status.in_(STILL_OPEN))
        .order_by(Discrepancy.channel, Discrepancy.id)
    ).all()
    return DaySummary(
        day=day,
        runs=[
            {
                "channel": run.channel,
                "state": run.state.value,
                "lines": run.lines,
                "bill_sha256": run.bill_sha256,
                "error": run.error,
            }
            for run in runs
        ],
        counts=counts,
        fees_fen={c: found.get("fees_fen", 0) for c, found in by_channel.items()},
        still_open=[discrepancy_out(item) for item in items],
        chart=chart(session, day),
    )


def summary_csv(summary: DaySummary) -> str:
    """Two tables in one file, a blank line between them: the counts by kind and
    channel, then the open discrepancies with both sides. UTF-8 with a BOM, so
    that Excel reads the Chinese labels."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)
    channels = summary.channels
    writer.writerow(["day", "kind", "label", *channels, "total"])
    for count in summary.counts:
        writer.writerow(
            [
                summary.day,
                count.name,
                count.label,
                *(count.by_channel.get(c, 0) for c in channels),
                count.total,
            ]
        )
    fees = [summary.fees_fen.get(c, 0) for c in channels]
    writer.writerow([summary.day, "fees_fen", "手续费 / fees (fen)", *fees, sum(fees)])
    writer.writerow([])
    writer.writerow(COLUMNS)
    for row in summary.still_open:
        writer.writerow([_cell(row[column]) for column in COLUMNS])
    return buffer.getvalue()


def summary_pdf(summary: DaySummary) -> bytes:
    font = register_cjk_font()
    styles = _styles(font)
    channels = summary.channels
    story: list[Flowable] = [
        Paragraph(f"对账汇总 Reconciliation summary · {summary.day}", styles["title"]),
        Spacer(1, 3 * mm),
        Paragraph("渠道运行 / Runs", styles["heading"]),
    ]
    run_rows: list[list[Any]] = [["渠道 / Channel", "状态 / State", "行数 / Lines"]]
    run_rows += [
        [
            CHANNEL_LABELS.get(run["channel"], run["channel"]),
            run["state"] + (f": {run['error']}" if run["error"] else ""),
            str(run["lines"]),
        ]
        for run in summary.runs
    ] or [["—", "未运行 / no run", ""]]
    story.append(_table(run_rows, font, numeric_from=2))

    story.append(Paragraph("按类别计数 / Counts by kind", styles["heading"]))
    count_rows: list[list[Any]] = [
        ["类别 / Kind", *(CHANNEL_LABELS.get(c, c) for c in channels), "合计 / Total"]
    ]
    count_rows += [
        [count.label, *(str(count.by_channel.get(c, 0)) for c in channels)]
        + [str(count.total)]
        for count in summary.counts
    ]
    fees = [summary.fees_fen.get(c, 0) for c in channels]
    count_rows.append(
        ["手续费 / fees (¥)", *(format_yuan(f) for f in fees), format_yuan(sum(fees))]
    )
    story.append(_table(count_rows, font, numeric_from=1))

    first, last = summary.chart[0].day, summary.chart[-1].day
    story.append(
        Paragraph(
            f"近 30 天对平与未结 / Matched versus still open, {first} – {last}",
            styles["heading"],
        )
    )
    story.append(chart_drawing(summary.chart, font, width=180 * mm))

    story.append(
        Paragraph(
            f"未结差异 / Open discrepancies ({len(summary.still_open)})",
            styles["heading"],
        )
    )
    open_rows: list[list[Any]] = [
        [
            "类别 / Kind",
            "状态 / Status",
            "订单 / Order",
            "我方 / Ours",
            "渠道 / Channel",
            "说明 / Note",
        ]
    ]
    for item in summary.still_open:
        open_rows.append(
            [
                item["label"],
                item["status"],
                item["out_trade_no"] or item["out_refund_no"] or "",
                _side(item["our_state"], item["our_amount_fen"]),
                f"{item['channel']} "
                + _side(item["channel_state"], item["channel_amount_fen"]),
                Paragraph(item["note"] or "", styles["cell"]),
            ]
        )
    if len(open_rows) == 1:
        open_rows.append(["无 / none", "", "", "", "", ""])
    widths = [44 * mm, 22 * mm, 58 * mm, 34 * mm, 44 * mm, None]
    story.append(_table(open_rows, font, widths=widths))
    return _build(
        story,
        font,
        pagesize=landscape(A4),
        title=f"对账汇总 Reconciliation summary {summary.day}",
    )


# -- a merchant's statements ----------------------------------------------------


STATEMENT_COLUMNS = (
    "merchant",
    "day",
    "gross_fen",
    "refunds_fen",
    "fees_fen",
    "net_fen",
    "paid_fen",
    "entry_id",
)


def statement_out(row: MerchantStatement) -> dict[str, Any]:
    return {
        "merchant": row.merchant,
        "day": row.day,
        "gross_by_channel": json.loads(row.gross_by_channel),
        "gross_fen": row.gross_fen,
        "refunds_fen": row.refunds_fen,
        "fees_fen": row.fees_fen,
        "net_fen": row.net_fen,
        "paid_fen": row.paid_fen,
        "entry_id": row.entry_id,
    }


@dataclasses.dataclass(frozen=True)
class StatementReport:
    merchant: str | None
    """The merchant's code, or None for a report of every merchant."""
    name: str
    """``中文名 / English name`` when the merchant is known."""
    statements: list[dict[str, Any]]
    """As ``statement_out`` gives them, newest day first."""

    @property
    def channels(self) -> list[str]:
        seen = {c for row in self.statements for c in row["gross_by_channel"]}
        known = [*CHANNELS, "campus"]
        return [c for c in known if c in seen] + sorted(seen - set(known))


def statement_report(
    session: Session, merchant: str | None, rows: Iterable[MerchantStatement]
) -> StatementReport:
    name = ""
    if merchant:
        known = session.scalar(select(Merchant).where(Merchant.code == merchant))
        if known is not None:
            name = f"{known.name_zh} / {known.name_en}"
    return StatementReport(merchant, name, [statement_out(row) for row in rows])


def statements_csv(report: StatementReport) -> str:
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)
    # Alphabetical, as the columns were before the PDF came: kept for spreadsheets
    # already reading them.
    channels = sorted(report.channels)
    writer.writerow(
        [
            *STATEMENT_COLUMNS[:2],
            *(f"gross_{c}_fen" for c in channels),
            *STATEMENT_COLUMNS[2:],
        ]
    )
    for out in report.statements:
        writer.writerow(
            [
                out["merchant"],
                out["day"],
                *(out["gross_by_channel"].get(c, 0) for c in channels),
                *(_cell(out[c]) for c in STATEMENT_COLUMNS[2:]),
            ]
        )
    return buffer.getvalue()


def statements_pdf(report: StatementReport) -> bytes:
    font = register_cjk_font()
    styles = _styles(font)
    who = report.merchant or "全部商户 / every merchant"
    story: list[Flowable] = [
        Paragraph("商户结算单 Merchant settlement statement", styles["title"]),
        Paragraph(f"{who} {report.name}".strip(), styles["subtitle"]),
        Spacer(1, 4 * mm),
    ]
    channels = report.channels
    header = ["日期 / Day"]
    if report.merchant is None:
        header.append("商户 / Merchant")
    header += [CHANNEL_LABELS.get(c, c) for c in channels]
    header += [
        "退款 / Refunds",
        "手续费 / Fees",
        "应付净额 / Net payable",
        "实付 / Paid out",
    ]
    rows: list[list[Any]] = [header]
    for out in report.statements:
        row = [str(out["day"])]
        if report.merchant is None:
            row.append(out["merchant"])
        row += [format_yuan(out["gross_by_channel"].get(c, 0)) for c in channels]
        # A payout differs from the net when the merchant owed refunds of takings
        # already paid out (or a late day's takings were paid by a later one).
        row += [
            format_yuan(out["refunds_fen"]),
            format_yuan(out["fees_fen"]),
            format_yuan(out["net_fen"]),
            format_yuan(out["paid_fen"]),
        ]
        rows.append(row)
    if report.statements:
        total = ["合计 / Total"] + ([""] if report.merchant is None else [])
        total += [
            format_yuan(
                sum(out["gross_by_channel"].get(c, 0) for out in report.statements)
            )
            for c in channels
        ]
        total += [
            format_yuan(sum(out[field] for out in report.statements))
            for field in ("refunds_fen", "fees_fen", "net_fen", "paid_fen")
        ]
        rows.append(total)
    else:
        rows.append(["无结算单 / no statements"] + [""] * (len(header) - 1))
    numeric_from = 2 if report.merchant is None else 1
    story.append(_table(rows, font, numeric_from=numeric_from, total_row=True))
    story.append(Spacer(1, 3 * mm))
    story.append(
        Paragraph(
            "金额单位：元。应付净额 = 收款 − 退款 − 手续费；实付为扣除商户此前所欠"
            "（已结算款项的退款）后实际付出的金额。 Amounts in yuan; net payable = "
            "takings − refunds − fees; paid out is what the payout moved, less what "
            "the merchant owed from refunds of takings already paid out.",
            styles["small"],
        )
    )
    return _build(
        story,
        font,
        pagesize=A4,
        title=f"商户结算单 Merchant settlement statement {who}",
    )


# -- PDF pieces -----------------------------------------------------------------


def _styles(font: str) -> dict[str, ParagraphStyle]:
    def style(name: str, size: float, **options: Any) -> ParagraphStyle:
        return ParagraphStyle(
            name,
            fontName=font,
            fontSize=size,
            leading=size * 1.3,
            textColor=INK,
            wordWrap="CJK",
            **options,
        )

    return {
        "title": style("title", 14),
        "subtitle": style("subtitle", 10),
        "heading": style("heading", 10.5, spaceBefore=6, spaceAfter=3),
        "cell": style("cell", 7.5),
        "small": style("small", 7),
    }


def _table(
    rows: list[list[Any]],
    font: str,
    *,
    numeric_from: int | None = None,
    widths: Sequence[float | None] | None = None,
    total_row: bool = False,
) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    commands: list[tuple[Any, ...]] = [
        # Every cell in the embedded font: a cell left to reportlab's default
        # would bring in Helvetica, which is not embedded.
        ("FONTNAME", (0, 0), (-1, -1), font),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, RULE),
        ("LINEBELOW", (0, -1), (-1, -1), 0.6, RULE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
    if numeric_from is not None:
        commands.append(("ALIGN", (numeric_from, 0), (-1, -1), "RIGHT"))
    if total_row and len(rows) > 2:
        commands.append(("LINEABOVE", (0, -1), (-1, -1), 0.6, RULE))
    table.setStyle(TableStyle(commands))
    return table


def _build(
    story: list[Flowable], font: str, *, pagesize: tuple[float, float], title: str
) -> bytes:
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=pagesize,
        leftMargin=14 * mm,
        rightMargin=14 * mm,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title=title,
        author="campus-card reconciliation",
        creator="campus-card reconciliation",
        lang="zh-CN",
        # The page's starting font, which reportlab sets on every page even when
        # nothing is drawn in it.
        initialFontName=font,
        initialFontSize=8,
    )
    document.build(story)
    return buffer.getvalue()


def _side(state: str | None, amount_fen: int | None) -> str:
    amount = f" ¥{format_yuan(amount_fen)}" if amount_fen is not None else ""
    return f"{state or '—'}{amount}"


def _cell(value: object) -> object:
    return "" if value is None else value
