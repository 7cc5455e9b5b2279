"""The people's side: the student's code page pays at the CLI simulator, the web
POS, the operator's day page with a refund, the static QR's amount form, the
card page's link to the code, the list of terminals and the seed's terminal."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from sqlalchemy import select, update

from campus.auth import Role
from payments.cards import Card
from payments.channel_log import ChannelCall
from payments.merchants import MerchantKind, Terminal, add_terminal, open_merchant
from payments.pos.models import CashierMerchant, PosPayment
from tests.live import in_app


def _sign_in_student(client, card) -> None:
    answer = client.post("/sign-in/dev", data={"number": card.person.number})
    assert answer.status_code == 302


def test_the_code_page_pays_from_the_cli_simulator(
    app, client, make_card, terminal, session
):
    card = make_card(balance_fen=3000)
    _sign_in_student(client, card)
    page = client.get("/card/pay-code")
    fresh = client.post("/card/pay-code/new").get_json()

    result = app.test_cli_runner().invoke(
        args=[
            "pos",
            "pay",
            "--terminal",
            terminal.key_id,
            "--amount",
            "12.50",
            "--code",
            fresh["code"],
        ]
    )

    assert page.status_code == 200
    assert "<svg" in fresh["qr_svg"] and "<rect" in fresh["barcode_svg"]
    assert re.fullmatch(r"7\d{27}", fresh["code"])
    answer = json.loads(result.output)
    assert (answer["status"], answer["state"]) == (200, "succeeded")
    assert fresh["code"] not in result.output
    session.rollback()
    assert card.wallet.balance_fen == 1750


def test_a_student_sets_a_pin_on_the_code_page(client, make_card, app, terminal):
    card = make_card(balance_fen=9000)
    _sign_in_student(client, card)

    client.post("/card/pin", data={"pin": "246810"})
    fresh = client.post("/card/pay-code/new").get_json()
    status, answer = terminal.pay(6000, code=fresh["code"], pin="246810")

    assert answer["state"] == "succeeded"


def _works_for(session, cashier_id: int, terminal) -> None:  # type: ignore[no-untyped-def]
    merchant_id = session.scalar(
        select(Terminal.merchant_id).where(Terminal.key_id == terminal.key_id)
    )
    session.add(CashierMerchant(operator_id=cashier_id, merchant_id=merchant_id))
    session.commit()


def test_the_web_pos_charges_a_card(
    client, sign_in_operator, terminal, make_card, session
):
    card = make_card(balance_fen=1000)
    _works_for(session, sign_in_operator(Role.CASHIER), terminal)

    page = client.post(
        "/pos",
        data={
            "terminal": terminal.key_id,
            "amount": "2.50",
            "code": card.number,
            "tap": "1",
        },
    )

    assert 'data-state="succeeded"' in page.text
    session.rollback()
    assert card.wallet.balance_fen == 750


def test_the_web_pos_refuses_a_disabled_terminal(
    client, sign_in_operator, terminal, make_card, session
):
    card = make_card(balance_fen=1000)
    session.execute(
        update(Terminal).where(Terminal.key_id == terminal.key_id).values(enabled=False)
    )
    session.commit()
    _works_for(session, sign_in_operator(Role.CASHIER), terminal)

    page = client.post(
        "/pos",
        data={
            "terminal": terminal.key_id,
            "amount": "2.50",
            "code": card.number,
            "tap": "1",
        },
    )

    assert 'role="alert"' in page.text
    assert "data-state" not in page.text
    session.rollback()
    assert card.wallet.balance_fen == 1000


def test_the_operator_day_page_lists_and_refunds(
    client, sign_in_operator, terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    _, paid = terminal.pay(800, card_number=card.number)
    sign_in_operator(Role.FINANCE)

    listed = client.get(f"/pos/merchants/{merchant.code}")
    refunded = client.post(
        f"/pos/merchants/{merchant.code}",
        data={
            "out_trade_no": paid["out_trade_no"],
            "amount": "3.00",
            "destination": "original",
        },
    )
    api = client.get(f"/api/pos/merchants/{merchant.code}/payments").get_json()

    assert paid["out_trade_no"] in listed.text
    assert "¥3.00 已退款" in refunded.text
    assert "已支付" in listed.text and "succeeded" not in listed.text
    assert api["payments"][0]["refunded_fen"] == 300
    session.rollback()
    assert card.wallet.balance_fen == 500


def test_a_cashier_charges_only_on_their_own_merchants_terminals(
    client, sign_in_operator, terminal, make_card, session
):
    card = make_card(balance_fen=1000)
    other = open_merchant(
        session, "OTHER", "别家窗口", "Another window", MerchantKind.CANTEEN_WINDOW
    )
    elsewhere = add_terminal(session, other, "next door").key_id
    session.commit()
    _works_for(session, sign_in_operator(Role.CASHIER), terminal)

    listed = client.get("/pos").text
    refused = client.post(
        "/pos",
        data={"terminal": elsewhere, "amount": "2.50", "code": card.number, "tap": "1"},
    )

    assert terminal.key_id in listed and elsewhere not in listed
    assert 'role="alert"' in refused.text and "data-state" not in refused.text
    session.rollback()
    assert card.wallet.balance_fen == 1000


def test_a_cashier_of_no_merchant_is_told_why_the_till_is_empty(
    client, sign_in_operator, terminal
):
    sign_in_operator(Role.CASHIER)

    page = client.get("/pos").text

    assert terminal.key_id not in page
    assert "flask pos assign-cashier" in page


def test_the_web_pos_says_the_outcome_in_words_not_codes(
    client, sign_in_operator, terminal, make_card, session
):
    card = make_card(balance_fen=100)
    _works_for(session, sign_in_operator(Role.CASHIER), terminal)

    page = client.post(
        "/pos",
        data={
            "terminal": terminal.key_id,
            "amount": "20.00",
            "code": card.number,
            "tap": "1",
        },
    ).text

    assert 'data-state="failed"' in page
    assert "失败 · ¥20.00" in page and "余额不足" in page
    assert "insufficient_funds" not in page


def test_the_static_qr_asks_the_amount_then_opens_the_checkout(
    client, merchant, session
):
    form = client.get(f"/pay/m/{merchant.code}")
    opened = client.post(f"/pay/m/{merchant.code}", data={"amount": "6.80"})
    checkout = client.get(opened.headers["Location"])

    assert form.status_code == 200
    assert opened.status_code == 302
    assert "6.80" in checkout.text
    assert 'data-testid="instruction"' in checkout.text


def test_assign_cashier_from_the_cli(app, session, merchant, sign_in_operator):
    sign_in_operator(Role.CASHIER)
    from campus.auth import Operator

    username = session.query(Operator).order_by(Operator.id.desc()).first().username

    result = app.test_cli_runner().invoke(
        args=[
            "pos",
            "assign-cashier",
            "--operator",
            username,
            "--merchant",
            merchant.code,
        ]
    )

    assert result.exit_code == 0
    session.rollback()
    assert session.query(CashierMerchant).count() == 1


def test_the_card_page_links_to_the_payment_code(client, make_card):
    card = make_card(balance_fen=100)
    _sign_in_student(client, card)

    page = client.get("/card")
    link = re.search(r'href="([^"]+)" data-testid="pay-code-link"', page.text)

    assert link is not None
    assert client.get(link.group(1)).status_code == 200


def test_the_terminals_command_lists_key_ids_never_secrets(
    app, session, merchant, make_terminal
):
    other = open_merchant(session, "M99999", "二食堂", "Second", merchant.kind)
    session.commit()
    till, off, elsewhere = make_terminal(), make_terminal(), make_terminal(other)
    session.execute(
        update(Terminal).where(Terminal.key_id == off.key_id).values(enabled=False)
    )
    session.commit()

    listed = app.test_cli_runner().invoke(args=["pos", "terminals"])
    one = app.test_cli_runner().invoke(
        args=["pos", "terminals", "--merchant", other.code]
    )

    assert listed.exit_code == 0
    rows = {line.split()[1]: line.split() for line in listed.output.splitlines()[1:]}
    assert rows[till.key_id][:3] == [merchant.code, till.key_id, "yes"]
    assert rows[off.key_id][2] == "no"
    assert rows[elsewhere.key_id][0] == other.code
    assert not any(t.secret in listed.output for t in (till, off, elsewhere))
    assert [line.split()[1] for line in one.output.splitlines()[1:]] == [
        elsewhere.key_id
    ]


def test_demo_seed_prints_a_terminal_the_simulator_pays_with(app, session):
    seeded = app.test_cli_runner().invoke(args=["demo", "seed", "--students", "2"])
    key_id = re.search(r"演示终端: (\S+)", seeded.output).group(1)
    card = max(session.scalars(select(Card)), key=lambda card: card.balance_fen)
    number = card.number
    session.rollback()

    paid = app.test_cli_runner().invoke(
        args=["pos", "pay", "--terminal", key_id, "--amount", "0.01", "--card", number]
    )

    assert seeded.exit_code == 0, seeded.output
    assert json.loads(paid.output)["state"] == "succeeded"


@pytest.mark.parametrize("channel", ["wechat", "alipay"])
@pytest.mark.parametrize("password_seconds", [0, 5])
def test_the_cli_simulator_pays_a_sandbox_code_password_or_not(
    live_app, session, merchant, monkeypatch, channel, password_seconds
):
    terminal = add_terminal(session, merchant, "cli till")
    session.commit()
    # The payment's polling moves the sandbox clock instead of sleeping.
    config = live_app.app.extensions["payments.pos"]
    monkeypatch.setitem(
        live_app.app.extensions,
        "payments.pos",
        dataclasses.replace(config, sleep=live_app.sandbox.clock.advance),
    )
    gateway = live_app.sandbox.gateways[channel]
    if password_seconds:
        gateway.set_password_needed("demo-1", password_seconds)
    code = gateway.current_code("demo-1")

    # In a thread of its own, with the served app's context and session: the
    # test's session stays the one its fixtures close.
    result = in_app(
        live_app,
        lambda: live_app.app.test_cli_runner().invoke(
            args=["pos", "pay", "--terminal", terminal.key_id, "--amount", "12.50",
                  "--code", code]
        ),
    )  # fmt: skip

    answer = json.loads(result.output)
    assert (answer["status"], answer["state"]) == (200, "succeeded"), answer
    assert (answer["channel"], answer["amount_fen"]) == (channel, 1250)
    assert code not in result.output
    session.rollback()
    paid = session.scalars(
        select(PosPayment).where(PosPayment.out_trade_no == answer["out_trade_no"])
    ).one()
    assert (paid.state.value, paid.amount_fen) == ("succeeded", 1250)
    asked = session.scalars(
        select(ChannelCall.operation).where(
            ChannelCall.out_trade_no == paid.out_trade_no
        )
    ).all()
    # With the password to type, the answer came from asking again.
    assert ("query" in asked) == bool(password_seconds)
