"""Top-up end to end over real HTTP: our pages, the real SDKs, the sandbox's
gateways and payer pages, and the notification back, for every entry point."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import requests  # noqa: F401

from payments import ledger

DESKTOP = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"}
PHONE = {
    "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
    "AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"
}
IN_WECHAT = {"User-Agent": PHONE["User-Agent"] + " MicroMessenger/8.0.47 NetType/WIFI"}
IN_ALIPAY = {
    "User-Agent": PHONE["User-Agent"] + " AlipayClient/10.5.36 Language/zh-Hans"
}


def _hidden_inputs(html: str) -> dict[str, str]:
    return dict(
        re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    )


def _order_number(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _state(browser: requests.Session, live_app, number: str) -> dict:
    return browser.get(f"{live_app.url}/api/top-ups/{number}", timeout=10).json()


def _deliver_and_check(live_app, browser, number, card, session, expected_fen):
    assert live_app.sandbox.outbox.deliver_due() >= 1
    order = _state(browser, live_app, number)
    assert order["state"] == "succeeded"
    assert order["balance_fen"] == expected_fen
    session.rollback()  # end the test's read snapshot (SQLite WAL keeps one)
    assert card.wallet.balance_fen == expected_fen
    assert ledger.check_ledger(session) == []


def test_desktop_wechat_native_qr(live_app, student_browser, session):
    browser = student_browser(DESKTOP)
    card = student_browser.card

    result = browser.post(
        f"{live_app.url}/card/top-up",
        data={"card": card.number, "amount": "50", "channel": "wechat"},
    )
    number = _order_number(result.url)
    qr = _state(browser, live_app, number)["qr_content"]
    cashier = browser.post(f"{live_app.url}/sandbox/scan", data={"code_url": qr})
    browser.post(cashier.url, data={"payer": "demo-1", "action": "confirm"})

    assert qr.startswith("weixin://wxpay/bizpayurl")
    assert "<svg" in result.text and "50.00" in result.text
    _deliver_and_check(live_app, browser, number, card, session, 6000)


def test_desktop_alipay_precreate_qr(live_app, student_browser, session):
    browser = student_browser(DESKTOP)
    card = student_browser.card

    result = browser.post(
        f"{live_app.url}/card/top-up",
        data={"card": card.number, "amount": "12.50", "channel": "alipay"},
    )
    number = _order_number(result.url)
    qr = _state(browser, live_app, number)["qr_content"]
    pay_page = browser.get(qr)
    browser.post(pay_page.url, data={"payer_id": "demo-1", "action": "confirm"})

    _deliver_and_check(live_app, browser, number, card, session, 2250)


def test_phone_browser_wechat_h5(live_app, student_browser, session):
    browser = student_browser(PHONE)
    card = student_browser.card

    cashier = browser.post(
        f"{live_app.url}/card/top-up",
        data={"card": card.number, "amount": "20", "channel": "wechat"},
    )
    back = browser.post(
        cashier.url,
        data={"payer": "demo-1", "action": "confirm", **_hidden_inputs(cashier.text)},
    )
    number = _order_number(back.url)

    assert "/sandbox/" in cashier.url
    assert "/card/top-ups/" in back.url  # the return URL lands on the result page
    _deliver_and_check(live_app, browser, number, card, session, 3000)


def test_phone_browser_alipay_wap(live_app, student_browser, session):
    browser = student_browser(PHONE)
    card = student_browser.card

    pay_page = browser.post(
        f"{live_app.url}/card/top-up",
        data={"card": card.number, "amount": "30", "channel": "alipay"},
    )
    back = browser.post(pay_page.url, data={"payer_id": "demo-2", "action": "confirm"})
    number = _order_number(back.url)

    assert "/sandbox/alipay/" in pay_page.url
    assert "/card/top-ups/" in back.url
    _deliver_and_check(live_app, browser, number, card, session, 4000)


def test_inside_wechat_jsapi_after_oauth(live_app, student_browser, session):
    browser = student_browser(IN_WECHAT)
    card = student_browser.card

    authorize = browser.post(
        f"{live_app.url}/card/top-up", data={"card": card.number, "amount": "10"}
    )
    query = {
        key: values[0]
        for key, values in parse_qs(urlsplit(authorize.url).query).items()
    }
    result = browser.post(
        authorize.url.split("#")[0],
        data={**_hidden_inputs(authorize.text), **query, "payer": "demo-1"},
    )
    number = _order_number(result.url)
    sheet = re.search(r'href="([^"]+)" data-testid="open-cashier"', result.text)
    cashier = browser.get(live_app.url + sheet.group(1).replace("&amp;", "&"))
    browser.post(
        cashier.url,
        data={"payer": "demo-1", "action": "confirm", **_hidden_inputs(cashier.text)},
    )

    assert "/card/top-ups/" in result.url
    _deliver_and_check(live_app, browser, number, card, session, 2000)


def test_inside_alipay_in_app_after_authorisation(live_app, student_browser, session):
    browser = student_browser(IN_ALIPAY)
    card = student_browser.card

    authorize = browser.post(
        f"{live_app.url}/card/top-up", data={"card": card.number, "amount": "15"}
    )
    result = browser.post(authorize.url, data={"payer_id": "demo-1"})
    number = _order_number(result.url)
    sheet = re.search(r'href="([^"]+)" data-testid="open-cashier"', result.text)
    pay_page = browser.get(live_app.url + sheet.group(1).replace("&amp;", "&"))
    browser.post(pay_page.url, data={"payer_id": "demo-1", "action": "confirm"})

    _deliver_and_check(live_app, browser, number, card, session, 2500)
