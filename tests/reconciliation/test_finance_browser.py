"""Finance's pages in a real headless Chromium, at phone and desktop size: an
operator signs in through the staff form, reads the chart, the runs and both sides
of a discrepancy, resolves it or marks a flagged order reviewed through the page's
own forms, and downloads a merchant's statements; an auditor reads the same page
without a single form; on a phone the wide tables scroll inside their cards."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Locator, Page, expect
from pypdf import PdfReader
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campus.auth import Role, create_operator
from payments import ledger
from payments.cards import Card
from payments.channels.base import PaymentResult, TradeState
from payments.ledger import EntryKind
from payments.merchants import Merchant
from payments.orders import SettleOutcome
from payments.topups import (
    TopUpLimits,
    TopUpState,
    find_top_up,
    finish_unpaid,
    open_top_up,
    settle_top_up,
)
from reconciliation.models import (
    Discrepancy,
    DiscrepancyStatus,
    OrderReview,
    ReconciliationRun,
    RunState,
)
from reconciliation.settlement import ChannelFee, settle_merchants
from tests.conftest import PHONE, LiveApp

pytestmark = pytest.mark.browser

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2031, 5, 6)
"""The day reconciled: the service's yesterday, its clock being set to the next
morning, so that the 30-day chart ends on it."""
MORNING_AFTER = dt.datetime(2031, 5, 7, 9, tzinfo=SHANGHAI)

PASSWORD = "correct horse battery"
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
SIZES = {
    "phone": {**PHONE, "locale": "zh-CN"},
    "desktop": {**DESKTOP, "locale": "zh-CN"},
}
both_sizes = pytest.mark.parametrize("size", ["phone", "desktop"])

_operators = itertools.count(1)


@pytest.fixture
def service_day(live_app: LiveApp) -> dt.date:
    """The service's clock at the morning after ``DAY`` (``live_app`` puts it
    back after the test)."""
    live_app.sandbox.clock.set(MORNING_AFTER)
    return DAY


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Callable[[str], Page]]:
    """A new browser context and page at the named size; closed after the test."""
    contexts: list[Any] = []

    def open_(size: str) -> Page:
        context = chromium.new_context(**SIZES[size])
        contexts.append(context)
        return context.new_page()

    yield open_
    for context in contexts:
        context.close()


def sign_in(
    page: Page, live_app: LiveApp, session: Session, role: Role, next_: str
) -> str:
    """Create an operator with ``role`` and sign in through the staff form;
    returns the operator's username."""
    username = f"browser-op{next(_operators)}"
    create_operator(session, username, PASSWORD, [role])
    session.commit()
    page.goto(f"{live_app.url}/operator/sign-in?next={next_}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(next_) + "$"))
    return username


@pytest.fixture
def reconciled_day(session: Session, service_day: dt.date) -> Discrepancy:
    """A finished WeChat Pay run for the day and the one discrepancy it left open:
    the channel says 51.00 where we booked 50.00."""
    session.add(
        ReconciliationRun(
            channel="wechat",
            day=service_day,
            state=RunState.FINISHED,
            attempts=1,
            lines=12,
            counts=json.dumps({"matched": 11, "amount_mismatch": 1}),
        )
    )
    item = Discrepancy(
        channel="wechat",
        day=service_day,
        kind="amount_mismatch",
        key="T20310506changed0001",
        status=DiscrepancyStatus.OPEN,
        out_trade_no="T20310506changed0001",
        our_state="paid",
        our_amount_fen=5000,
        channel_state="paid",
        channel_amount_fen=5100,
        note="5100 fen at the channel, 5000 here",
    )
    session.add(item)
    session.commit()
    return item


def _discrepancies_card(page: Page) -> Locator:
    return page.locator("section", has=page.locator("h2", has_text="未处理差异"))


def _resolution_entries(session: Session, item_id: int) -> list[ledger.JournalEntry]:
    return list(
        session.scalars(
            select(ledger.JournalEntry).where(
                ledger.JournalEntry.idempotency_ref == f"resolution:{item_id}"
            )
        )
    )


@both_sizes
def test_finance_sees_both_sides_and_trusting_the_channel_books_the_difference(
    live_app, open_page, session, reconciled_day, size
):
    page = open_page(size)
    username = sign_in(page, live_app, session, Role.FINANCE, "/reconciliation")

    # The chart: 30 calendar days ending on the service's yesterday, which ran.
    bars = page.locator(".chart .day")
    expect(bars).to_have_count(30)
    last = bars.last
    expect(last).to_have_attribute("data-day", DAY.isoformat())
    expect(last).to_have_attribute("data-matched", "11")
    expect(last).to_have_attribute("data-open", "1")
    expect(last).not_to_have_class(re.compile(r"\bempty\b"))
    matched_bar = last.locator(".matched").bounding_box()
    open_bar = last.locator(".other").bounding_box()
    assert matched_bar and matched_bar["height"] > 0
    assert open_bar and open_bar["height"] > 0
    expect(page.locator(".chart .day.empty")).to_have_count(29)
    # The runs, with the day's reports.
    run = page.locator("section", has=page.locator("h2", has_text="对账批次"))
    run_row = run.locator("tbody tr")
    expect(run_row).to_have_count(1)
    expect(run_row).to_contain_text(DAY.isoformat())
    expect(run_row).to_contain_text("wechat")
    expect(run_row).to_contain_text("finished")
    expect(run_row.get_by_role("link", name="PDF")).to_have_attribute(
        "href", f"/reconciliation/summary.pdf?day={DAY}"
    )
    # The open discrepancy, with our side and the channel's.
    section = _discrepancies_card(page)
    expect(section.locator("h2")).to_have_text("未处理差异 (1)")
    row = section.locator("tbody tr", has_text="T20310506changed0001")
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text("金额不符 / amount mismatch")
    expect(cells.nth(3)).to_have_text("paid ¥50.00")
    expect(cells.nth(4)).to_have_text("wechat paid ¥51.00")

    row.locator("select[name=decision]").select_option(label="以渠道为准")
    row.locator("input[name=reason]").fill("the channel's bill is right")
    row.get_by_role("button", name="处理").click()

    expect(section.locator("h2")).to_have_text("未处理差异 (0)")
    expect(section.locator("tbody")).to_have_text("没有未处理的差异。")
    expect(page.locator("[role=alert]")).to_have_count(0)
    assert page.url == f"{live_app.url}/reconciliation"
    session.rollback()
    item = session.get(Discrepancy, reconciled_day.id)
    assert item.status is DiscrepancyStatus.RESOLVED
    assert item.resolution == "trust_channel"
    assert item.reason == "the channel's bill is right"
    assert item.resolved_by == f"operator:{username}"
    (entry,) = _resolution_entries(session, item.id)
    assert item.entry_id == entry.id
    assert entry.kind is EntryKind.ADJUSTMENT
    assert entry.order_ref == "T20310506changed0001"
    assert entry.created_by == f"operator:{username}"
    assert "the channel's bill is right" in entry.memo
    # The 1.00 of difference moves from clearing into suspense for finance to find.
    by_account = {
        posting.account.code: posting.amount_fen for posting in entry.postings
    }
    assert by_account == {
        ledger.clearing_account(session, "wechat").code: -100,
        ledger.suspense_account(session).code: 100,
    }
    assert ledger.check_ledger(session) == []


@both_sizes
def test_trusting_our_records_closes_the_discrepancy_and_moves_no_money(
    live_app, open_page, session, reconciled_day, size
):
    page = open_page(size)
    username = sign_in(page, live_app, session, Role.FINANCE, "/reconciliation")
    section = _discrepancies_card(page)
    row = section.locator("tbody tr", has_text="T20310506changed0001")

    row.locator("select[name=decision]").select_option(label="以我方为准")
    row.locator("input[name=reason]").fill("the channel corrects its bill")
    row.get_by_role("button", name="处理").click()

    expect(section.locator("h2")).to_have_text("未处理差异 (0)")
    expect(section.locator("tbody tr", has_text="T20310506changed0001")).to_have_count(
        0
    )
    session.rollback()
    item = session.get(Discrepancy, reconciled_day.id)
    assert (item.status, item.resolution) == (DiscrepancyStatus.RESOLVED, "trust_ours")
    assert item.reason == "the channel corrects its bill"
    assert item.resolved_by == f"operator:{username}"
    assert item.entry_id is None and _resolution_entries(session, item.id) == []
    assert session.scalar(select(func.count()).select_from(ledger.JournalEntry)) == 0
    assert ledger.check_ledger(session) == []


def test_a_resolution_without_a_reason_is_refused_where_it_was_asked(
    live_app, open_page, session, reconciled_day
):
    page = open_page("phone")
    sign_in(page, live_app, session, Role.FINANCE, "/reconciliation")
    posted: list[str] = []
    page.on(
        "request",
        lambda request: (
            posted.append(request.url) if request.method == "POST" else None
        ),
    )
    section = _discrepancies_card(page)
    row = section.locator("tbody tr", has_text="T20310506changed0001")
    reason = row.locator("input[name=reason]")

    # Empty: the browser itself says the field is needed and sends nothing.
    row.get_by_role("button", name="处理").click()
    empty = reason.evaluate(
        "field => [field.validity.valueMissing, field.validationMessage]"
    )
    assert posted == []
    assert empty[0] is True and empty[1]
    # Blank: the page is posted, and answers with a sentence, not an error page.
    reason.fill("      ")
    row.get_by_role("button", name="处理").click()

    alert = page.get_by_role("alert")
    expect(alert).to_have_text("请填写原因。")
    expect(alert).to_be_visible()
    assert posted == [f"{live_app.url}/reconciliation"]
    expect(section.locator("h2")).to_have_text("未处理差异 (1)")
    expect(section.locator("tbody tr", has_text="T20310506changed0001")).to_have_count(
        1
    )
    session.rollback()
    item = session.get(Discrepancy, reconciled_day.id)
    assert item.status is DiscrepancyStatus.OPEN
    assert item.resolution is None and item.reason is None
    assert session.scalar(select(func.count()).select_from(ledger.JournalEntry)) == 0


def test_a_discrepancy_resolved_in_another_tab_is_refused_and_booked_once(
    live_app, open_page, session, reconciled_day
):
    first = open_page("desktop")
    sign_in(first, live_app, session, Role.FINANCE, "/reconciliation")
    second = first.context.new_page()
    second.goto(f"{live_app.url}/reconciliation")
    row = _discrepancies_card(first).locator(
        "tbody tr", has_text="T20310506changed0001"
    )
    row.locator("input[name=reason]").fill("the channel's bill is right")
    row.get_by_role("button", name="处理").click()
    expect(_discrepancies_card(first).locator("h2")).to_have_text("未处理差异 (0)")
    first.reload()  # a GET after the redirect: nothing is posted again

    stale = _discrepancies_card(second).locator(
        "tbody tr", has_text="T20310506changed0001"
    )
    stale.locator("select[name=decision]").select_option("trust_ours")
    stale.locator("input[name=reason]").fill("changed my mind")
    stale.get_by_role("button", name="处理").click()

    expect(second.get_by_role("alert")).to_have_text("该差异已处理")
    expect(_discrepancies_card(second).locator("h2")).to_have_text("未处理差异 (0)")
    session.rollback()
    item = session.get(Discrepancy, reconciled_day.id)
    assert (item.resolution, item.reason) == (
        "trust_channel",
        "the channel's bill is right",
    )
    assert len(_resolution_entries(session, item.id)) == 1
    assert session.scalar(select(func.count()).select_from(ledger.JournalEntry)) == 1
    assert ledger.check_ledger(session) == []


# -- flagged orders ------------------------------------------------------------------

NOON = dt.datetime(2031, 3, 4, 4, 0, tzinfo=dt.UTC)


def flag_closed_top_up(session: Session, card: Card) -> str:
    """A 30.00 top-up that expired and was paid at the channel after: payments
    flags it and credits nothing."""
    top_up = open_top_up(
        session,
        card.number,
        3000,
        channel="wechat",
        payer_kind="native",
        limits=TopUpLimits(),
        zone=SHANGHAI,
        now=NOON,
    )
    session.commit()
    finish_unpaid(session, top_up.out_trade_no, TopUpState.CLOSED, "expired")
    outcome = settle_top_up(
        session,
        "wechat",
        PaymentResult(
            out_trade_no=top_up.out_trade_no,
            state=TradeState.SUCCEEDED,
            transaction_id="4200000099",
            amount_fen=3000,
        ),
        via="notification",
    )
    session.commit()
    assert outcome is SettleOutcome.FLAGGED
    return top_up.out_trade_no


@both_sizes
def test_a_flagged_order_marked_reviewed_moves_to_reviewed_lately_and_keeps_its_flag(
    live_app, open_page, session, make_card, size
):
    number = flag_closed_top_up(session, make_card())
    flag_reason = find_top_up(session, number).review_reason
    session.rollback()
    page = open_page(size)
    username = sign_in(page, live_app, session, Role.FINANCE, "/reconciliation")
    flagged = page.locator("#flagged")
    expect(flagged.locator("h2")).to_have_text("待复核订单（1）")
    row = flagged.locator("tbody tr", has_text=number)
    expect(row).to_contain_text("top_up closed")
    expect(row.locator("td.amount")).to_have_text("30.00")
    expect(flagged.get_by_role("heading", name="最近复核")).to_have_count(0)

    row.get_by_label("处理结果").fill("paid back at the counter")
    row.get_by_role("button", name="标记已复核").click()

    expect(flagged.locator("h2")).to_have_text("待复核订单（0）")
    expect(flagged.locator("table").first.locator("tbody")).to_have_text("无。")
    expect(flagged.get_by_role("heading", name="最近复核")).to_be_visible()
    reviewed = flagged.locator("table").nth(1).locator("tbody tr")
    expect(reviewed).to_have_count(1)
    cells = reviewed.locator("td")
    expect(cells.nth(0)).to_have_text(number)
    expect(cells.nth(1)).to_have_text("paid back at the counter")
    expect(cells.nth(2)).to_have_text(f"operator:{username}")
    session.rollback()
    (review,) = session.scalars(select(OrderReview)).all()
    assert (review.kind, review.out_trade_no, review.flag_reason) == (
        "top_up",
        number,
        flag_reason,
    )
    # The flag belongs to payments: still there, for the same reason; no money moved.
    top_up = find_top_up(session, number)
    assert top_up.needs_review is True and top_up.review_reason == flag_reason
    assert top_up.state is TopUpState.CLOSED
    assert ledger.check_ledger(session) == []


def test_a_review_without_a_note_is_refused_beside_the_flagged_order(
    live_app, open_page, session, make_card
):
    number = flag_closed_top_up(session, make_card())
    page = open_page("phone")
    sign_in(page, live_app, session, Role.FINANCE, "/reconciliation")
    row = page.locator("#flagged tbody tr", has_text=number)

    row.get_by_label("处理结果").fill("      ")
    row.get_by_role("button", name="标记已复核").click()

    expect(page.get_by_role("alert")).to_have_text("请写明复核结果。")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(OrderReview)) == 0
    expect(page.locator("#flagged h2")).to_have_text("待复核订单（1）")
    # The page has loaded (its alert is read above): where the alert stands.
    assert page.locator("#flagged").get_by_role("alert").all_inner_texts() == [
        "请写明复核结果。"
    ]


def test_an_auditor_reads_the_finance_page_without_any_form_to_change_it(
    live_app, open_page, session, reconciled_day, make_card
):
    number = flag_closed_top_up(session, make_card())
    page = open_page("desktop")

    sign_in(page, live_app, session, Role.AUDITOR, "/reconciliation")

    expect(page.locator("h1")).to_have_text("对账")
    expect(page.locator(".chart .day")).to_have_count(30)
    section = _discrepancies_card(page)
    row = section.locator("tbody tr", has_text="T20310506changed0001")
    expect(row).to_contain_text("paid ¥50.00")
    expect(row).to_contain_text("wechat paid ¥51.00")
    expect(page.locator("#flagged tbody tr", has_text=number)).to_have_count(1)
    expect(page.locator("main form")).to_have_count(0)
    expect(page.locator("main input, main select, main button")).to_have_count(0)
    expect(section.locator("th", has_text="处理")).to_have_count(0)
    expect(page.locator("#flagged th", has_text="复核")).to_have_count(0)
    # What auditors may do here: read, and download.
    expect(section.get_by_role("link", name="下载 CSV")).to_be_visible()


# -- merchant statements -------------------------------------------------------------

STATEMENT_DAY = dt.date(2031, 7, 1)


@pytest.fixture
def settled_merchant(
    live_app: LiveApp, session: Session, make_card: Any, merchant: Merchant
) -> Merchant:
    """A day of 12.50 from a campus card and 30.00 by WeChat Pay (0.18 fee),
    settled: 42.32 paid out."""
    from payments.wallet import pay_from_wallet

    live_app.sandbox.clock.set(dt.datetime.combine(STATEMENT_DAY, dt.time(12), dt.UTC))
    card = make_card(balance_fen=10_000)
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
    session.add(
        ChannelFee(
            channel="wechat",
            day=STATEMENT_DAY,
            out_trade_no="P-wx-1",
            merchant=merchant.code,
            fee_fen=18,
        )
    )
    session.commit()
    start = dt.datetime.combine(STATEMENT_DAY, dt.time(), tzinfo=dt.UTC)
    settle_merchants(session, STATEMENT_DAY, start, start + dt.timedelta(days=1))
    session.commit()
    return merchant


def _pdf_text(content: bytes) -> str:
    return "\n".join(
        page.extract_text() for page in PdfReader(io.BytesIO(content)).pages
    )


def test_a_merchants_statements_page_lists_the_day_and_downloads_csv_and_pdf(
    live_app, open_page, session, settled_merchant
):
    code = settled_merchant.code
    page = open_page("desktop")
    sign_in(page, live_app, session, Role.FINANCE, f"/reconciliation/merchants/{code}")

    expect(page.locator("h1")).to_have_text(f"结算单 · {code}")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.locator("td")).to_have_text(
        [STATEMENT_DAY.isoformat(), "30.00", "0.00", "12.50", "0.00", "0.18"]
        + ["42.32", "42.32"]
    )

    csv_link = page.get_by_role("link", name="下载 CSV")
    with page.expect_download() as csv_download:
        csv_link.click()
    pdf_link = page.get_by_role("link", name="PDF")
    with page.expect_download() as pdf_download:
        pdf_link.click()
    # The same links asked with the page's cookies, for the headers.
    csv_response = page.request.get(urljoin(page.url, csv_link.get_attribute("href")))
    pdf_response = page.request.get(urljoin(page.url, pdf_link.get_attribute("href")))

    assert csv_download.value.suggested_filename == f"statements-{code}.csv"
    assert pdf_download.value.suggested_filename == f"statements-{code}.pdf"
    csv_text = Path(csv_download.value.path()).read_text(encoding="utf-8-sig")
    header, *lines = csv_text.splitlines()
    assert header.startswith("merchant,day,gross_campus_fen,gross_wechat_fen")
    assert lines == [line for line in lines if line.startswith(f"{code},")]
    assert len(lines) == 1 and lines[0].startswith(f"{code},{STATEMENT_DAY},1250,3000")
    pdf_bytes = Path(pdf_download.value.path()).read_bytes()
    assert pdf_bytes.startswith(b"%PDF")
    text = _pdf_text(pdf_bytes)
    assert code in text and "测试窗口 / Test window" in text
    assert "42.32" in text
    assert csv_response.ok and pdf_response.ok
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert pdf_response.headers["content-type"] == "application/pdf"
    assert csv_response.body() == Path(csv_download.value.path()).read_bytes()
    assert pdf_response.body().startswith(b"%PDF")


# -- the phone ------------------------------------------------------------------------


def _page_width(page: Page) -> tuple[int, int]:
    """The page's scroll width beside the window's."""
    width, window = page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    return width, window


def _scrolls_inside(container: Locator) -> bool:
    """Whether the element is wider inside than it shows, and scrolls sideways."""
    return bool(
        container.evaluate(
            """element => {
            const wider = element.scrollWidth > element.clientWidth;
            element.scrollLeft = 60;
            const moved = element.scrollLeft > 0;
            element.scrollLeft = 0;
            return wider && moved;
        }"""
        )
    )


@pytest.fixture
def busy_day(session: Session, reconciled_day: Discrepancy, make_card: Any) -> None:
    """More of everything the finance page lists: runs with long findings and an
    error, open discrepancies with long notes, a flagged order and a review."""
    from reconciliation.flagged import review

    for days_back, channel in [(1, "alipay"), (2, "wechat"), (3, "alipay")]:
        session.add(
            ReconciliationRun(
                channel=channel,
                day=DAY - dt.timedelta(days=days_back),
                state=RunState.FAILED if days_back == 3 else RunState.FINISHED,
                attempts=2,
                lines=1834,
                counts=json.dumps(
                    {
                        "matched": 1800,
                        "amount_mismatch": 4,
                        "channel_only": 12,
                        "ours_only": 9,
                        "repaired": 7,
                        "held": 2,
                        "fees_fen": 118_234,
                    }
                ),
                error=(
                    "the bill's digest did not match the one announced"
                    if days_back == 3
                    else None
                ),
            )
        )
        session.add(
            Discrepancy(
                channel=channel,
                day=DAY - dt.timedelta(days=days_back),
                kind="channel_only",
                key=f"P2031050{7 - days_back}lunchwindow{days_back:04d}",
                status=DiscrepancyStatus.OPEN,
                out_trade_no=f"P2031050{7 - days_back}lunchwindow{days_back:04d}",
                channel_state="paid",
                channel_amount_fen=123_456,
                note="paid at the channel, never notified, no order of ours found",
            )
        )
    session.commit()
    flag_closed_top_up(session, make_card())
    second = flag_closed_top_up(session, make_card())
    review(
        session,
        "top_up",
        second,
        note="refunded to the student by hand at the service counter",
        operator="operator:someone-with-a-long-name",
    )
    session.commit()


def test_on_a_phone_the_finance_tables_scroll_inside_their_cards(
    live_app, open_page, session, busy_day
):
    page = open_page("phone")
    sign_in(page, live_app, session, Role.FINANCE, "/reconciliation")

    zh_heading = page.locator("h1").inner_text()
    zh_lang = page.locator("html").get_attribute("lang")
    zh_width = _page_width(page)
    cards = page.locator("section.card.scroll")
    scrolling = [_scrolls_inside(cards.nth(n)) for n in range(cards.count())]
    page.goto(f"{live_app.url}/reconciliation?lang=en")
    en_heading = page.locator("h1").inner_text()
    en_lang = page.locator("html").get_attribute("lang")
    en_width = _page_width(page)

    assert (zh_heading, zh_lang) == ("对账", "zh-CN")
    assert (en_heading, en_lang) == ("Reconciliation", "en")
    # Runs, open discrepancies, flagged orders: each wider than the phone, each
    # scrolling in its card; the page itself no wider than the screen.
    assert scrolling == [True, True, True]
    assert zh_width[0] <= zh_width[1] == 390, zh_width
    assert en_width[0] <= en_width[1] == 390, en_width


def test_on_a_phone_a_merchants_statements_fit_the_screen_in_either_language(
    live_app, open_page, session, settled_merchant
):
    code = settled_merchant.code
    page = open_page("phone")
    sign_in(page, live_app, session, Role.FINANCE, f"/reconciliation/merchants/{code}")

    zh_heading = page.locator("h1").inner_text()
    zh_width = _page_width(page)
    page.goto(f"{live_app.url}/reconciliation/merchants/{code}?lang=en")
    en_heading = page.locator("h1").inner_text()
    en_width = _page_width(page)
    en_row = page.locator("tbody tr").first.inner_text()

    assert zh_heading == f"结算单 · {code}"
    assert en_heading == f"Settlement statements · {code}"
    assert "42.32" in en_row
    assert zh_width[0] <= zh_width[1] == 390, zh_width
    assert en_width[0] <= en_width[1] == 390, en_width
