"""Refunds: in parts up to the total and never beyond, through the original
channel or to a wallet, the reverse entry posted once, and who may refund."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from campus.auth import Operator, Role, create_operator
from campus.database import db
from payments import ledger
from payments.cards import CardStatus, change_status
from payments.channel_log import ChannelCall
from payments.pos import refunds
from payments.pos.models import CashierMerchant, PosPayment, PosRefund, RefundState

from .conftest import new_order_no


def _refund(client, out_trade_no: str, amount_fen: int, **fields):
    return client.post(
        f"/api/pos/payments/{out_trade_no}/refunds",
        json={"amount_fen": amount_fen, **fields},
    )


def test_partial_refunds_up_to_the_total_and_not_beyond(
    client, sign_in_operator, terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    _, paid = terminal.pay(1000, card_number=card.number)
    sign_in_operator(Role.FINANCE)

    first = _refund(client, paid["out_trade_no"], 300)
    second = _refund(client, paid["out_trade_no"], 700)
    beyond = _refund(client, paid["out_trade_no"], 1)

    assert (first.status_code, first.json["state"]) == (201, "succeeded")
    assert second.json["state"] == "succeeded"
    assert (beyond.status_code, beyond.json["code"]) == (409, "refund_refused")
    session.rollback()
    assert card.wallet.balance_fen == 1000
    assert merchant.payable.balance_fen == 0
    refunds = session.scalars(select(PosRefund)).all()
    assert [
        ledger.find_entry_id(session, f"pos_refund:{r.out_refund_no}") for r in refunds
    ] == [r.entry_id for r in refunds]
    assert ledger.check_ledger(session) == []


def test_a_refund_larger_than_the_payment_is_refused(
    client, sign_in_operator, terminal, make_card, session
):
    card = make_card(balance_fen=1000)
    _, paid = terminal.pay(500, card_number=card.number)
    sign_in_operator(Role.FINANCE)

    answer = _refund(client, paid["out_trade_no"], 501)

    assert answer.status_code == 409
    session.rollback()
    assert card.wallet.balance_fen == 500


def test_a_cashier_refunds_only_their_merchants_payments(
    client, sign_in_operator, terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    _, paid = terminal.pay(500, card_number=card.number)
    sign_in_operator(Role.CASHIER)

    refused = _refund(client, paid["out_trade_no"], 100)
    cashier = session.scalars(select(Operator).order_by(Operator.id.desc())).first()
    session.add(CashierMerchant(operator_id=cashier.id, merchant_id=merchant.id))
    session.commit()
    allowed = _refund(client, paid["out_trade_no"], 100)

    assert refused.status_code == 403
    assert allowed.json["state"] == "succeeded"


def _finance_browser(live_app, session) -> requests.Session:
    session.rollback()  # end the read snapshot taken before the payment
    create_operator(session, "fin", "correct horse battery", [Role.FINANCE])
    session.commit()
    browser = requests.Session()
    browser.post(
        f"{live_app.url}/api/operators/sign-in",
        json={"username": "fin", "password": "correct horse battery"},
        timeout=10,
    ).raise_for_status()
    return browser


def _settle_channel_refunds(live_app, browser, numbers: list[str]) -> list[dict]:
    """Deliver the refund notifications due, then ask about each refund."""
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.clock.advance(120)
    live_app.sandbox.outbox.deliver_due()
    return [
        browser.get(f"{live_app.url}/api/pos/refunds/{number}", timeout=30).json()
        for number in numbers
    ]


def test_a_wechat_payment_is_refunded_through_wechat(
    live_app, live_terminal, session, merchant, fast_poll
):
    code = live_app.sandbox.gateways["wechat"].current_code("demo-1")
    _, paid = live_terminal.pay(900, new_order_no(), code=code)
    browser = _finance_browser(live_app, session)

    part = browser.post(
        f"{live_app.url}/api/pos/payments/{paid['out_trade_no']}/refunds",
        json={"amount_fen": 400},
        timeout=30,
    ).json()
    [asked] = _settle_channel_refunds(live_app, browser, [part["out_refund_no"]])

    assert part["channel"] == "wechat"
    assert asked["state"] == "succeeded"
    assert asked["refund_id"]
    session.rollback()
    assert merchant.payable.balance_fen == 500
    assert ledger.clearing_account(session, "wechat").balance_fen == -500
    assert ledger.check_ledger(session) == []


@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_a_channel_payment_is_refunded_in_parts_up_to_the_total_and_not_beyond(
    live_app, live_terminal, session, merchant, fast_poll, channel
):
    code = live_app.sandbox.gateways[channel].current_code("demo-1")
    _, paid = live_terminal.pay(900, new_order_no(), code=code)
    browser = _finance_browser(live_app, session)
    url = f"{live_app.url}/api/pos/payments/{paid['out_trade_no']}/refunds"

    parts = [
        browser.post(url, json={"amount_fen": fen}, timeout=30) for fen in (300, 600)
    ]
    beyond = browser.post(url, json={"amount_fen": 1}, timeout=30)
    settled = _settle_channel_refunds(
        live_app, browser, [part.json()["out_refund_no"] for part in parts]
    )

    assert [part.status_code for part in parts] == [201, 201]
    assert {part.json()["channel"] for part in parts} == {channel}
    assert (beyond.status_code, beyond.json()["refundable_fen"]) == (409, 0)
    assert [refund["state"] for refund in settled] == ["succeeded", "succeeded"]
    session.rollback()
    # The refused third refund never reached the channel.
    refund_calls = session.scalars(
        select(ChannelCall.outcome).where(ChannelCall.operation == "refund")
    ).all()
    assert refund_calls == ["ok", "ok"]
    assert merchant.payable.balance_fen == 0
    assert ledger.clearing_account(session, channel).balance_fen == 0
    assert ledger.check_ledger(session) == []


def _freeze(number: str) -> None:
    """Another desk freezes the card, in a session of its own. The caller's
    session reads nothing in between (on SQLite a read snapshot older than this
    commit cannot write afterwards)."""
    other = db.new_session()
    try:
        change_status(other, number, CardStatus.FROZEN, reason="lost", actor="desk")
        other.commit()
    finally:
        other.close()


def test_a_refund_to_a_card_no_longer_active_is_refused_and_reserves_nothing(
    client, sign_in_operator, terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    other = make_card()
    _, paid = terminal.pay(600, card_number=card.number)
    number, other_number = card.number, other.number
    session.rollback()
    _freeze(number)
    sign_in_operator(Role.FINANCE)

    refused = _refund(client, paid["out_trade_no"], 600)
    elsewhere = _refund(
        client,
        paid["out_trade_no"],
        600,
        destination="wallet",
        card_number=other_number,
    )

    assert (refused.status_code, refused.json["code"]) == (409, "card_not_active")
    assert (refused.json["card"], refused.json["card_status"]) == (number, "frozen")
    assert elsewhere.json["state"] == "succeeded"
    session.rollback()
    assert session.scalars(select(PosRefund.state)).all() == [RefundState.SUCCEEDED]
    assert card.wallet.balance_fen == 400
    assert other.wallet.balance_fen == 600
    assert merchant.payable.balance_fen == 0
    assert ledger.check_ledger(session) == []


def test_a_card_frozen_before_its_refund_settles_fails_it_and_frees_the_amount(
    client, sign_in_operator, terminal, make_card, merchant, session, monkeypatch
):
    card = make_card(balance_fen=1000)
    _, paid = terminal.pay(600, card_number=card.number)
    number = card.number
    sign_in_operator(Role.FINANCE)
    settle = refunds.settle_refund

    def frozen_first(*args, **kwargs):
        # Between the reservation's commit and the settlement.
        _freeze(number)
        return settle(*args, **kwargs)

    monkeypatch.setattr(refunds, "settle_refund", frozen_first)
    failed = _refund(client, paid["out_trade_no"], 600)
    monkeypatch.setattr(refunds, "settle_refund", settle)
    again = _refund(
        client, paid["out_trade_no"], 600, destination="wallet", card_number=card.number
    )

    assert (failed.status_code, failed.json["state"]) == (201, "failed")
    assert failed.json["failure"] == "card frozen"
    assert (again.status_code, again.json["code"]) == (409, "card_not_active")
    session.rollback()
    payment = session.scalars(select(PosPayment)).one()
    assert payment.refunded_fen == 0
    assert card.wallet.balance_fen == 400
    assert merchant.payable.balance_fen == 600
    assert ledger.check_ledger(session) == []


def _refund_left_processing(client, sign_in_operator, terminal, make_card, session):  # type: ignore[no-untyped-def]
    """A 2.50 wallet refund of a 6.00 payment, its process killed between opening
    the refund and settling it: (the card, the refund left processing)."""

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash

    card = make_card(balance_fen=1000)
    _, paid = terminal.pay(600, card_number=card.number)
    sign_in_operator(Role.FINANCE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refunds, "settle_refund", crash)
        with pytest.raises(Crash):
            _refund(client, paid["out_trade_no"], 250)
    return card, session.scalars(select(PosRefund)).one()


def test_an_auditor_reads_a_refund_left_processing_and_changes_nothing(
    client, sign_in_operator, terminal, make_card, merchant, session
):
    card, left = _refund_left_processing(
        client, sign_in_operator, terminal, make_card, session
    )
    sign_in_operator(Role.AUDITOR)

    asked = client.get(f"/api/pos/refunds/{left.out_refund_no}")

    assert (asked.status_code, asked.json["state"]) == (200, "processing")
    session.rollback()
    assert session.scalars(select(PosRefund)).one().state is RefundState.PROCESSING
    assert card.wallet.balance_fen == 400
    assert ledger.check_ledger(session) == []


def test_a_wallet_refund_left_processing_by_a_crash_settles_when_asked(
    client, sign_in_operator, terminal, make_card, merchant, session
):
    card, left = _refund_left_processing(
        client, sign_in_operator, terminal, make_card, session
    )
    assert left.state is RefundState.PROCESSING

    asked = client.get(f"/api/pos/refunds/{left.out_refund_no}").json

    assert asked["state"] == "succeeded"
    session.rollback()
    assert card.wallet.balance_fen == 650
    assert merchant.payable.balance_fen == 350
    assert ledger.check_ledger(session) == []
