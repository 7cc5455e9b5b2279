"""A student tops up from a phone-size headless Chromium, through the sandbox."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PHONE

pytestmark = pytest.mark.browser


def pay_in_the_sandbox(page) -> None:  # type: ignore[no-untyped-def]
    """Go through the sandbox's pages the way a payer would: the in-app sign-in
    (WeChat's web OAuth, Alipay's authorisation) when it comes, then the payment
    sheet, paying as demo-1."""
    page.wait_for_url(re.compile(r"/sandbox/"))
    result_page = None
    for _ in range(4):
        page.wait_for_load_state()
        confirm = page.locator("button[value=confirm]")
        if confirm.count():
            if page.locator("select[name=payer]").count():
                page.select_option("select[name=payer]", "demo-1")
            confirm.click()
            page.wait_for_load_state()
            if "/sandbox/" in page.url and result_page is not None:
                # Alipay's in-app sheet closes over our result page; the
                # sandbox's page stays open instead.
                page.goto(result_page)
            return
        # Back from the in-app sign-in on our result page: in the real app the
        # payment sheet opens over it; in the sandbox it is a link.
        cashier = page.get_by_test_id("open-cashier")
        if "/card/top-ups/" in page.url and cashier.count():
            result_page = page.url
            cashier.click()
            page.wait_for_url(re.compile(r"/sandbox/"))
            continue
        # The in-app sign-in: the first demo payer is demo-1.
        if page.locator("button[name=payer]").count():
            page.locator("button[name=payer]").first.click()
        elif page.locator("input[name=payer_id]").count():
            page.locator("input[name=payer_id]").first.check()
            page.click("button.primary")
        else:
            break
    raise AssertionError(f"no payment sheet at {page.url}: {page.content()[:800]}")


# Another phone browser: WeChat H5 or Alipay WAP; inside WeChat: JSAPI after the
# sandbox's web OAuth; inside Alipay: Alipay after its user authorisation.
WECHAT_APP = PHONE["user_agent"] + " MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI"
ALIPAY_APP = PHONE["user_agent"] + " AlipayClient/10.5.36.6000 Language/zh-Hans"


@pytest.mark.parametrize(
    ("user_agent", "button"),
    [
        (PHONE["user_agent"], "wechat"),
        (PHONE["user_agent"], "alipay"),
        (WECHAT_APP, None),
        (ALIPAY_APP, None),
    ],
    ids=["wechat-h5", "alipay-wap", "inside-wechat", "inside-alipay"],
)
def test_a_phone_top_up_shows_the_new_balance(
    live_app, chromium, make_card, session, user_agent, button
):
    card = make_card(balance_fen=1000)
    number = card.person.number
    context = chromium.new_context(
        **{**PHONE, "user_agent": user_agent}, locale="zh-CN"
    )
    page = context.new_page()

    page.goto(f"{live_app.url}/sign-in/dev?next=/card")
    page.fill("#number", number)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/card$"))
    starting = page.get_by_test_id("balance").inner_text()
    page.click("button.preset[data-amount='50']")
    if button is not None:
        page.click(f"button[value={button}]")
    else:
        page.click("button[type=submit]")
    pay_in_the_sandbox(page)
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
