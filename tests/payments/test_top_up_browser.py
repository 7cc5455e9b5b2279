"""A student tops up from a phone-size headless Chromium, through the sandbox."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PHONE

pytestmark = pytest.mark.browser


def test_a_phone_top_up_through_wechat_h5_shows_the_new_balance(
    live_app, chromium, make_card, session
):
    card = make_card(balance_fen=1000)
    number = card.person.number
    context = chromium.new_context(**PHONE, locale="zh-CN")
    page = context.new_page()

    page.goto(f"{live_app.url}/sign-in/dev?next=/card")
    page.fill("#number", number)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/card$"))
    starting = page.get_by_test_id("balance").inner_text()
    page.click("button.preset[data-amount='50']")
    page.click("button[value=wechat]")
    page.wait_for_url(re.compile(r"/sandbox/"))
    page.select_option("select[name=payer]", "demo-1")
    page.click("button[value=confirm]")
    page.wait_for_url(re.compile(r"/card/top-ups/T"))
    # The notification is on its way; the page also asks the server, which
    # queries the channel, so either path shows the payment.
    live_app.sandbox.outbox.deliver_due()
    page.get_by_test_id("top-up-state").filter(has_text="支付成功").wait_for(
        timeout=15_000
    )
    result_balance = page.get_by_test_id("balance").inner_text()
    page.screenshot(
        path=str(live_app.app.instance_path) + "/top-up-phone.png", full_page=True
    )
    page.goto(f"{live_app.url}/card")
    card_balance = page.get_by_test_id("balance").inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    context.close()

    assert starting == "¥10.00"
    assert result_balance == "¥60.00"
    assert card_balance == "¥60.00"
    assert width <= 390  # nothing wider than the phone's screen
