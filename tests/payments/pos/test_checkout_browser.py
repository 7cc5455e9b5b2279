"""The aggregated-QR checkout in a real headless Chromium (Debian's), as WeChat,
Alipay and a plain phone browser: each is sent down its own path, pays on the
sandbox, and the POS learns the result through ``query``."""

from __future__ import annotations

import pytest

from payments import ledger

from .conftest import new_order_no

PHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
USER_AGENTS = {
    "wechat": PHONE_UA + " MicroMessenger/8.0.47 NetType/WIFI Language/zh_CN",
    "alipay": PHONE_UA + " AlipayClient/10.5.36 Language/zh-Hans",
}


def _page(chromium, user_agent: str):
    context = chromium.new_context(
        user_agent=user_agent, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    return context, context.new_page()


def _qr_order(live_terminal, amount_fen: int) -> tuple[str, str]:
    order_no = new_order_no()
    status, answer = live_terminal.send(
        "POST",
        "/api/terminal/qr-orders",
        {"order_no": order_no, "amount_fen": amount_fen},
    )
    assert (status, answer["state"]) == (202, "awaiting")
    return order_no, answer["checkout_url"]


@pytest.mark.parametrize("app_name", ["wechat", "alipay"])
def test_checkout_inside_the_payment_apps(
    chromium, live_app, live_terminal, session, merchant, app_name
):
    order_no, url = _qr_order(live_terminal, 1800)
    context, page = _page(chromium, USER_AGENTS[app_name])
    try:
        page.goto(url)
        # The channel's authorisation page (OAuth for the openid / buyer id).
        assert "/sandbox/" in page.url
        if app_name == "wechat":
            page.locator("button[name=payer]").first.click()
        else:
            page.locator("button.primary").click()
        page.wait_for_selector("[data-testid=open-cashier]")
        assert page.get_attribute("[data-testid=checkout-state]", "data-state") == (
            "paying"
        )
        page.click("[data-testid=open-cashier]")
        page.locator("button[name=action][value=confirm]").click()
        page.wait_for_load_state()
    finally:
        context.close()
    assert live_app.sandbox.outbox.deliver_due() >= 1

    status, answer = live_terminal.query(order_no)

    assert (answer["state"], answer["channel"]) == ("succeeded", app_name)
    session.rollback()
    assert merchant.payable.balance_fen == 1800
    assert ledger.check_ledger(session) == []


def test_checkout_in_a_plain_browser_offers_the_campus_card(
    chromium, live_app, live_terminal, make_card, session, merchant
):
    card = make_card(balance_fen=5000)
    order_no, url = _qr_order(live_terminal, 1200)
    context, page = _page(chromium, PHONE_UA)
    try:
        page.goto(url)
        assert page.is_visible("[data-testid=instruction]")
        page.click("[data-testid=campus-sign-in]")
        page.fill("input[name=number]", card.person.number)
        page.locator("form button[type=submit], form button").first.click()
        page.click("[data-testid=pay-wallet]")
        state = page.get_attribute("[data-testid=checkout-state]", "data-state")
    finally:
        context.close()

    status, answer = live_terminal.query(order_no)

    assert state == "succeeded"
    assert (answer["state"], answer["channel"]) == ("succeeded", "campus")
    session.rollback()
    assert card.wallet.balance_fen == 3800


def test_a_payer_scanning_a_stale_code_reads_a_page_not_json(chromium, live_app):
    # WeChat's browser on a Chinese phone asks for Chinese.
    context = chromium.new_context(
        user_agent=USER_AGENTS["wechat"],
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        locale="zh-CN",
    )
    page = context.new_page()
    try:
        answer = page.goto(f"{live_app.url}/pay/o/no-longer-here")
        heading = page.locator("h1").inner_text()
        home = page.get_by_role("link", name="返回首页")
        home.click()
        page.wait_for_load_state()
        landed = page.url
    finally:
        context.close()

    assert answer is not None and answer.status == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert heading == "收款不存在"
    assert landed == f"{live_app.url}/"
