"""The POS pages for people in a real headless Chromium (Debian's), at phone size in
Chinese and, for the cashier's and operator's pages, at desk size too: the
student's payment code paid at a signed terminal, once only, and renewed by the
page's timer; a cashier who signs in through the staff form and charges a card on
the web POS; the operator's day page that lists the payments and refunds them in
part or in full, each refund reaching the wallet exactly once."""

from __future__ import annotations

import itertools
import re

import pytest

from campus.auth import Role, create_operator
from payments import ledger
from payments.pos.models import CashierMerchant
from tests.conftest import PHONE

pytestmark = pytest.mark.browser

DESK = {"viewport": {"width": 1280, "height": 800}}
PASSWORD = "correct horse battery"
_staff = itertools.count(1)


def _open(chromium, size: dict):
    context = chromium.new_context(**size, locale="zh-CN")
    context.set_default_timeout(10_000)
    return context, context.new_page()


def _layout(page) -> tuple[int, int, str]:
    """How wide the document is, how wide the window, and the main heading."""
    width, window = page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    return width, window, page.locator("main h1").inner_text()


def _sign_in_student(page, url: str, card, target: str) -> None:
    page.goto(f"{url}/sign-in/dev?next={target}")
    page.fill("#number", card.person.number)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}{target}")


def _staff_member(session, *roles: Role, merchant=None) -> str:
    username = f"staff{next(_staff)}"
    operator = create_operator(session, username, PASSWORD, list(roles))
    session.flush()
    if merchant is not None:
        session.add(CashierMerchant(operator_id=operator.id, merchant_id=merchant.id))
    session.commit()
    return username


def _sign_in_staff(page, url: str, username: str, target: str) -> None:
    """Through the staff sign-in form, as a person would."""
    page.goto(f"{url}/operator/sign-in?next={target}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}{target}")


def _submit(page, button) -> None:
    """Press a form's button and wait for the page it answers with."""
    with page.expect_navigation():
        button.click()


def _shown_code(page) -> str:
    """The code's digits as the page shows them (in groups of four)."""
    page.wait_for_function(
        "document.querySelector('[data-testid=pay-code]').textContent.length > 0"
    )
    return page.get_by_test_id("pay-code").inner_text().replace(" ", "")


ITF_DIGITS = {
    "nnwwn": "0", "wnnnw": "1", "nwnnw": "2", "wwnnn": "3", "nnwnw": "4",
    "wnwnn": "5", "nwwnn": "6", "nnnww": "7", "wnnwn": "8", "nwnwn": "9",
}  # fmt: skip


def _read_barcode(page) -> str:
    """The digits in the page's Interleaved 2 of 5 barcode, read from its bars and
    the gaps between them as a scanner would (narrow or wide)."""
    bars = page.locator("[data-testid=pay-code-barcode] svg rect").evaluate_all(
        "rects => rects.map(r => [+r.getAttribute('x'), +r.getAttribute('width')])"
    )
    widths = []
    for (x, width), following in zip(bars, [*bars[1:], None], strict=True):
        widths.append(width)
        if following is not None:
            widths.append(following[0] - x - width)
    narrow = min(widths)
    elements = "".join("w" if width > 2 * narrow else "n" for width in widths)
    assert elements.startswith("nnnn") and elements.endswith("wnn"), elements
    body = elements[4:-3]
    digits = []
    for start in range(0, len(body), 10):
        pair = body[start : start + 10]
        digits.append(ITF_DIGITS[pair[0::2]] + ITF_DIGITS[pair[1::2]])
    return "".join(digits)


def _payment_code_shown(page) -> tuple[str, int, str]:
    code = _shown_code(page)
    qr = page.get_by_test_id("pay-code-qr").locator("svg")
    box = qr.bounding_box()
    assert box is not None
    return code, int(box["width"]), _read_barcode(page)


# -- the student's payment code ---------------------------------------------------


def test_a_phone_shows_a_code_that_pays_once_at_the_till(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=3000)
    context, page = _open(chromium, PHONE)
    try:
        _sign_in_student(page, live_app.url, card, "/card/pay-code")
        code, qr_width, barcode = _payment_code_shown(page)
        width, window, heading = _layout(page)

        _, paid = live_terminal.pay(1250, code=code)
        _, again = live_terminal.pay(1250, code=code)

        page.reload()
        balance_line = page.locator("main .muted").first.inner_text()
    finally:
        context.close()

    assert re.fullmatch(r"7\d{27}", code)
    assert barcode == code  # the scanner reads what the student sees
    assert qr_width >= 150
    assert heading == "付款码"
    assert width <= window == 390
    assert (paid["state"], paid["channel"], paid["amount_fen"]) == (
        "succeeded",
        "campus",
        1250,
    )
    assert code not in str(paid)
    assert (again["state"], again["failure_code"]) == ("failed", "campus_code_used")
    assert "¥17.50" in balance_line
    session.rollback()
    assert card.wallet.balance_fen == 1750
    assert merchant.payable.balance_fen == 1250
    assert ledger.check_ledger(session) == []


def test_the_code_page_shows_a_new_code_every_30_seconds_and_the_new_one_pays(
    chromium, live_app, live_terminal, make_card, session
):
    card = make_card(balance_fen=3000)
    context, page = _open(chromium, PHONE)
    # The page's own timer, run forward by the browser's clock: no waiting.
    context.clock.install()
    try:
        _sign_in_student(page, live_app.url, card, "/card/pay-code")
        first = _shown_code(page)
        page.clock.run_for(29_000)
        still = _shown_code(page)
        page.clock.run_for(1_500)
        page.wait_for_function(
            "old => document.querySelector('[data-testid=pay-code]')"
            ".textContent.replace(/ /g, '') !== old",
            arg=first,
        )
        second, _, barcode = _payment_code_shown(page)
        width, window, heading = _layout(page)
    finally:
        context.close()

    _, paid = live_terminal.pay(480, code=second)

    assert still == first
    assert second != first
    assert re.fullmatch(r"7\d{27}", second)
    assert barcode == second
    assert heading == "付款码"
    assert width <= window == 390
    assert paid["state"] == "succeeded"
    session.rollback()
    assert card.wallet.balance_fen == 2520
    assert ledger.check_ledger(session) == []


# -- the web POS ------------------------------------------------------------------


def _charge(page, amount: str, code: str, *, tap: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Type an amount and a code (or a tapped card's number) and press 收款."""
    page.fill("input[name=amount]", amount)
    page.fill("input[name=code]", code)
    if tap:
        page.check("input[name=tap]")
    _submit(page, page.get_by_role("button", name="收款"))


def test_a_cashier_signs_in_on_a_phone_and_charges_a_tapped_card(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    cashier = _staff_member(session, Role.CASHIER, merchant=merchant)
    context, page = _open(chromium, PHONE)
    try:
        _sign_in_staff(page, live_app.url, cashier, "/pos")
        page.select_option("select[name=terminal]", live_terminal.key_id)
        _charge(page, "2.50", card.number, tap=True)
        result = page.get_by_test_id("pos-result")
        result.wait_for()
        state = result.get_attribute("data-state")
        shown = result.inner_text()
        width, window, heading = _layout(page)
    finally:
        context.close()

    assert state == "succeeded"
    assert "¥2.50" in shown
    assert card.number not in shown  # masked on the screen
    assert heading == "网页收银台 演示用"
    assert width <= window == 390
    session.rollback()
    assert card.wallet.balance_fen == 750
    assert merchant.payable.balance_fen == 250
    assert ledger.check_ledger(session) == []


def test_a_cashier_at_a_desk_charges_the_code_a_students_phone_shows(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=2000)
    cashier = _staff_member(session, Role.CASHIER, merchant=merchant)
    phone, student = _open(chromium, PHONE)
    desk, till = _open(chromium, DESK)
    try:
        _sign_in_student(student, live_app.url, card, "/card/pay-code")
        code = _shown_code(student)
        _sign_in_staff(till, live_app.url, cashier, "/pos")
        till.select_option("select[name=terminal]", live_terminal.key_id)
        _charge(till, "6.80", code)
        result = till.get_by_test_id("pos-result")
        result.wait_for()
        state = result.get_attribute("data-state")
        shown = result.inner_text()
        # The same code a second time, as a cashier pressing again would.
        _charge(till, "6.80", code)
        till.get_by_test_id("pos-result").wait_for()
        again = till.get_by_test_id("pos-result").get_attribute("data-state")
        width, window, _ = _layout(till)
    finally:
        phone.close()
        desk.close()

    assert state == "succeeded"
    assert "¥6.80" in shown
    assert code not in shown
    assert again == "failed"
    assert width <= window
    session.rollback()
    assert card.wallet.balance_fen == 1320
    assert merchant.payable.balance_fen == 680
    assert ledger.check_ledger(session) == []


# -- the operator's day page ------------------------------------------------------


def _refund_form(page, out_trade_no: str):
    row = page.get_by_test_id("payment-row").filter(has_text=out_trade_no)
    return row, row.locator("form")


def test_finance_refunds_in_part_then_the_rest_and_the_wallet_gets_it_back(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    finance = _staff_member(session, Role.FINANCE)
    _, paid = live_terminal.pay(800, card_number=card.number)
    day = f"/pos/merchants/{merchant.code}"
    context, page = _open(chromium, DESK)
    try:
        _sign_in_staff(page, live_app.url, finance, day)
        row, form = _refund_form(page, paid["out_trade_no"])
        listed = row.inner_text()
        offered = form.locator("input[name=amount]").input_value()
        form.locator("input[name=amount]").fill("3.00")
        _submit(page, form.get_by_role("button", name="退款"))
        page.get_by_role("status").wait_for()
        first_message = page.get_by_role("status").inner_text()
        row, form = _refund_form(page, paid["out_trade_no"])
        after_part = row.inner_text()
        rest = form.locator("input[name=amount]").input_value()
        session.rollback()
        wallet_after_part = card.wallet.balance_fen

        _submit(page, form.get_by_role("button", name="退款"))
        second_message = page.get_by_role("status").inner_text()
        row, form = _refund_form(page, paid["out_trade_no"])
        after_all = row.inner_text()
        forms_left = form.count()
        width, window, heading = _layout(page)
    finally:
        context.close()

    assert "¥8.00" in listed
    assert offered == "8.00"
    assert first_message.startswith("退款 R") and second_message.startswith("退款 R")
    assert first_message != second_message  # two refunds, each its own number
    assert wallet_after_part == 200 + 300
    assert rest == "5.00"
    assert "¥3.00" in after_part
    assert "¥3.00" in after_all and "¥5.00" in after_all
    assert forms_left == 0
    assert heading == f"{merchant.name_zh} 今日收款"
    assert width <= window == 1280
    session.rollback()
    assert card.wallet.balance_fen == 1000
    assert merchant.payable.balance_fen == 0
    assert ledger.check_ledger(session) == []


def test_a_refund_sent_again_from_a_stale_page_refunds_nothing(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    cashier = _staff_member(session, Role.CASHIER, merchant=merchant)
    finance = _staff_member(session, Role.FINANCE)
    _, paid = live_terminal.pay(600, card_number=card.number)
    day = f"/pos/merchants/{merchant.code}"
    # Two people with the day page open, the cashier of the window and finance:
    # both are offered the whole amount to refund.
    till_context, at_window = _open(chromium, DESK)
    office_context, at_office = _open(chromium, DESK)
    try:
        _sign_in_staff(at_window, live_app.url, cashier, day)
        _sign_in_staff(at_office, live_app.url, finance, day)
        offered = [
            _refund_form(page, paid["out_trade_no"])[1]
            .locator("input[name=amount]")
            .input_value()
            for page in (at_window, at_office)
        ]
        _, form = _refund_form(at_window, paid["out_trade_no"])
        form.locator("select[name=destination]").select_option("wallet")
        _submit(at_window, form.get_by_role("button", name="退款"))
        at_window.get_by_role("status").wait_for()
        done = at_window.get_by_role("status").inner_text()
        _, form = _refund_form(at_office, paid["out_trade_no"])
        _submit(at_office, form.get_by_role("button", name="退款"))
        at_office.get_by_role("status").wait_for()
        refused = at_office.get_by_role("status").inner_text()
        row, form = _refund_form(at_office, paid["out_trade_no"])
        refunds_listed = row.locator("td").nth(5).inner_text()
        forms_left = form.count()
    finally:
        till_context.close()
        office_context.close()

    assert offered == ["6.00", "6.00"]
    assert done.startswith("退款 R")
    assert refused == "最多还可退 0.00 元。"
    assert refunds_listed.count("¥6.00") == 1
    assert forms_left == 0
    session.rollback()
    assert card.wallet.balance_fen == 1000
    assert merchant.payable.balance_fen == 0
    assert ledger.check_ledger(session) == []


def test_a_cashier_on_a_phone_refunds_from_the_day_page(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    cashier = _staff_member(session, Role.CASHIER, merchant=merchant)
    _, paid = live_terminal.pay(450, card_number=card.number)
    day = f"/pos/merchants/{merchant.code}"
    context, page = _open(chromium, PHONE)
    try:
        _sign_in_staff(page, live_app.url, cashier, day)
        width, window, heading = _layout(page)
        # Checked before tapping: with the page too wide the tap cannot land.
        assert heading == f"{merchant.name_zh} 今日收款"
        assert width <= window == 390
        _, form = _refund_form(page, paid["out_trade_no"])
        with page.expect_navigation():
            form.get_by_role("button", name="退款").tap()
        page.get_by_role("status").wait_for()
        message = page.get_by_role("status").inner_text()
    finally:
        context.close()

    assert message.startswith("退款 R")
    session.rollback()
    assert card.wallet.balance_fen == 1000
    assert ledger.check_ledger(session) == []


def test_the_day_page_names_payment_and_refund_states_in_chinese(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    finance = _staff_member(session, Role.FINANCE)
    _, paid = live_terminal.pay(300, card_number=card.number)
    context, page = _open(chromium, DESK)
    try:
        _sign_in_staff(page, live_app.url, finance, f"/pos/merchants/{merchant.code}")
        _, form = _refund_form(page, paid["out_trade_no"])
        form.locator("input[name=amount]").fill("1.00")
        _submit(page, form.get_by_role("button", name="退款"))
        page.get_by_role("status").wait_for()
        message = page.get_by_role("status").inner_text()
        row, _ = _refund_form(page, paid["out_trade_no"])
        cells = row.locator("td").all_inner_texts()
    finally:
        context.close()

    session.rollback()
    assert card.wallet.balance_fen == 800
    states = [message, cells[4], cells[5]]
    assert not [text for text in states if re.search(r"succeeded|processing", text)]


def test_the_web_pos_tells_the_cashier_the_outcome_in_chinese(
    chromium, live_app, live_terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    cashier = _staff_member(session, Role.CASHIER, merchant=merchant)
    context, page = _open(chromium, PHONE)
    try:
        _sign_in_staff(page, live_app.url, cashier, "/pos")
        page.select_option("select[name=terminal]", live_terminal.key_id)
        outcomes = []
        # Paid, then refused: more than is left on the card.
        for amount in ("2.00", "20.00"):
            _charge(page, amount, card.number, tap=True)
            page.get_by_test_id("pos-result").wait_for()
            outcomes.append(page.locator("main section").inner_text())
        width, window, heading = _layout(page)
    finally:
        context.close()

    assert heading == "网页收银台 演示用"
    assert width <= window == 390
    session.rollback()
    assert card.wallet.balance_fen == 800
    for shown in outcomes:
        assert not re.search(r"succeeded|failed|insufficient_funds", shown), shown
