"""Finance's reports as CSV and PDF: the PDFs parse, say what the CSVs say in the
finance labels, and embed every font they use."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from campus.auth import Role
from payments import ledger
from payments.ledger import EntryKind
from reconciliation import reports
from reconciliation.models import (
    Discrepancy,
    DiscrepancyStatus,
    ReconciliationRun,
    RunState,
)
from reconciliation.settlement import ChannelFee, settle_merchants

DAY = dt.date(2031, 5, 6)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _run(channel: str, day: dt.date, lines: int, **counts: int) -> ReconciliationRun:
    return ReconciliationRun(
        channel=channel,
        day=day,
        state=RunState.FINISHED,
        attempts=1,
        lines=lines,
        counts=json.dumps(counts),
    )


def _discrepancy(
    key: str, kind: str, status: DiscrepancyStatus, **sides
) -> Discrepancy:
    return Discrepancy(
        channel="wechat",
        day=DAY,
        kind=kind,
        key=key,
        status=status,
        out_trade_no=key,
        note=sides.pop("note", ""),
        **sides,
    )


@pytest.fixture
def reconciled_day(session):
    session.add_all(
        [
            _run(
                "wechat",
                DAY,
                12,
                matched=9,
                amount_mismatch=1,
                channel_only=2,
                repaired=1,
                fees_fen=42,
            ),
            _run("alipay", DAY, 4, matched=3, ours_only=1, held=1, fees_fen=7),
            _discrepancy(
                "T-changed",
                "amount_mismatch",
                DiscrepancyStatus.OPEN,
                our_state="paid",
                our_amount_fen=5000,
                channel_state="paid",
                channel_amount_fen=5100,
                note="5100 fen at the channel, 5000 here",
            ),
            _discrepancy(
                "T-unknown",
                "channel_only",
                DiscrepancyStatus.OPEN,
                channel_state="paid",
                channel_amount_fen=1234,
            ),
            _discrepancy(
                "T-repaired",
                "channel_only",
                DiscrepancyStatus.REPAIRED,
                our_state="unpaid",
                our_amount_fen=999,
                channel_amount_fen=999,
            ),
        ]
    )
    session.commit()
    return DAY


def _pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def _fonts_embedded(content: bytes, tmp_path) -> list[tuple[str, str]]:
    """(font name, emb column) for every font ``pdffonts`` lists."""
    path = tmp_path / "report.pdf"
    path.write_bytes(content)
    listing = subprocess.run(
        ["pdffonts", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    header, _, *rows = listing
    at = header.index("emb")
    return [(row.split()[0], row[at : at + 3].strip()) for row in rows]


def test_the_day_summary_pdf_shows_counts_and_open_items_in_embedded_fonts(
    session, reconciled_day, tmp_path
):
    summary = reports.day_summary(session, reconciled_day)

    content = reports.summary_pdf(summary)

    text = _pdf_text(content)
    for label in (
        "对平 / matched",
        "金额不符 / amount mismatch",
        "长款 / channel only",
    ):
        assert label in text
    assert "自动修复 / repaired" in text
    assert "T-changed" in text and "¥50.00" in text and "¥51.00" in text
    assert "T-unknown" in text and "¥12.34" in text
    assert "T-repaired" not in text  # closed: not among the open items
    assert "0.49" in text  # the fees of both channels, in yuan
    fonts = _fonts_embedded(content, tmp_path)
    assert fonts and all(embedded == "yes" for _, embedded in fonts), fonts


def test_the_day_summary_csv_counts_by_kind_and_channel_then_lists_open_items(
    session, reconciled_day
):
    summary = reports.day_summary(session, reconciled_day)

    lines = reports.summary_csv(summary).lstrip("\ufeff").splitlines()

    assert lines[0] == "day,kind,label,wechat,alipay,total"
    assert "2031-05-06,matched,对平 / matched,9,3,12" in lines
    assert "2031-05-06,channel_only,长款 / channel only,2,0,2" in lines
    assert "2031-05-06,fees_fen,手续费 / fees (fen),42,7,49" in lines
    blank = lines.index("")
    assert lines[blank + 1].startswith("id,channel,day,kind,label,status")
    listed = lines[blank + 2 :]
    assert len(listed) == 2
    assert any("T-changed" in line and ",5000,5100," in line for line in listed)


def _settled_merchant(session, make_card, merchant) -> None:
    card = make_card(balance_fen=10_000)
    from payments.wallet import pay_from_wallet

    pay_from_wallet(session, card.number, merchant, 1250, idempotency_ref="campus:1")
    ledger.transfer(
        session,
        kind=EntryKind.PAYMENT,
        idempotency_ref="wx:1",
        source=ledger.clearing_account(session, "wechat"),
        destination=merchant.payable,
        amount_fen=3000,
        order_ref="P-wx-1",
    )
    today = dt.datetime.now(dt.UTC).date()
    session.add(
        ChannelFee(
            channel="wechat",
            day=today,
            out_trade_no="P-wx-1",
            merchant=merchant.code,
            fee_fen=18,
        )
    )
    session.commit()
    start = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
    settle_merchants(session, today, start, start + dt.timedelta(days=1))
    session.commit()


def test_a_merchant_statement_pdf_shows_its_takings_fees_and_net_in_embedded_fonts(
    client, session, make_card, merchant, sign_in_operator, tmp_path
):
    _settled_merchant(session, make_card, merchant)
    sign_in_operator(Role.FINANCE)

    response = client.get(f"/reconciliation/statements.pdf?merchant={merchant.code}")

    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = _pdf_text(response.data)
    assert "商户结算单" in text and "测试窗口 / Test window" in text
    assert "微信支付 / WeChat Pay" in text and "校园卡 / Campus card" in text
    assert "30.00" in text and "12.50" in text and "0.18" in text
    assert "42.32" in text  # 30.00 + 12.50 - 0.18
    fonts = _fonts_embedded(response.data, tmp_path)
    assert fonts and all(embedded == "yes" for _, embedded in fonts), fonts


def test_finance_downloads_the_day_summary_as_csv_and_pdf(
    client, session, reconciled_day, sign_in_operator
):
    sign_in_operator(Role.REGISTRAR)
    refused = client.get(f"/reconciliation/summary.pdf?day={reconciled_day}")
    sign_in_operator(Role.AUDITOR)

    pdf = client.get(f"/reconciliation/summary.pdf?day={reconciled_day}")
    csv = client.get(f"/reconciliation/summary.csv?day={reconciled_day}")
    undated = client.get("/reconciliation/summary.pdf")
    page = client.get("/reconciliation")

    assert refused.status_code == 403
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert "T-changed" in csv.get_data(as_text=True)
    assert undated.status_code == 400
    assert f"/reconciliation/summary.pdf?day={reconciled_day}" in page.get_data(
        as_text=True
    )


def test_the_chart_has_every_calendar_day_with_empty_days_where_nothing_ran(
    session, reconciled_day
):
    session.add(_run("wechat", DAY - dt.timedelta(days=3), 5, matched=5))
    session.add(_run("wechat", DAY - dt.timedelta(days=40), 8, matched=8))
    session.commit()

    days = reports.chart(session, DAY)

    assert [d.day for d in days] == [
        DAY - dt.timedelta(days=n) for n in reversed(range(30))
    ]
    by_day = {d.day: (d.ran, d.matched, d.still_open) for d in days}
    # Both channels' matches; the amount mismatch and the unknown order still open,
    # the repaired order not.
    assert by_day[DAY] == (True, 12, 2)
    assert by_day[DAY - dt.timedelta(days=3)] == (True, 5, 0)
    assert by_day[DAY - dt.timedelta(days=1)] == (False, 0, 0)
    assert sum(d.ran for d in days) == 2  # 40 days back is outside the window


def test_a_few_open_items_beside_many_matches_still_show_in_the_chart(session):
    days = [
        reports.ChartDay(DAY, True, 1_000_000, 3),
        reports.ChartDay(DAY, True, 500_000, 0),
        reports.ChartDay(DAY, False, 0, 0),
    ]

    heights = reports.bar_heights(days)

    assert heights[0][1] >= 0.04 and sum(heights[0]) <= 1
    assert heights[1] == (500_000 / 1_000_003, 0) and heights[2] == (0, 0)


@pytest.fixture
def service_clock(app):
    """The service's clock (the sandbox's, shared by the session), put back after."""
    clock = app.extensions["campus.sandbox"].clock
    yield clock
    clock.reset()


def test_the_finance_page_and_the_summary_pdf_chart_the_last_30_days(
    service_clock, client, session, sign_in_operator
):
    # The page charts the 30 days up to the service's yesterday.
    service_clock.set(dt.datetime(2031, 6, 1, 9, tzinfo=SHANGHAI))
    yesterday = dt.date(2031, 5, 31)
    session.add(_run("wechat", yesterday, 7, matched=7))
    session.add(_discrepancy_on(yesterday - dt.timedelta(days=2)))
    session.commit()
    sign_in_operator(Role.FINANCE)

    page = client.get("/reconciliation").get_data(as_text=True)
    pdf = client.get(f"/reconciliation/summary.pdf?day={yesterday}")

    bars = re.findall(r'class="day( empty)?"[^>]*data-day="([\d-]+)"', page)
    assert len(bars) == 30 and bars[-1] == ("", yesterday.isoformat())
    assert sum(1 for empty, _ in bars if not empty) == 1
    assert f'data-day="{yesterday}" data-matched="7" data-open="0"' in page
    two_days_back = (yesterday - dt.timedelta(days=2)).isoformat()
    assert f'data-day="{two_days_back}" data-matched="0" data-open="1"' in page
    assert "Matched versus still open" in _pdf_text(pdf.data)


def _discrepancy_on(day: dt.date) -> Discrepancy:
    item = _discrepancy("T-old", "ours_only", DiscrepancyStatus.HELD)
    item.day = day
    return item
