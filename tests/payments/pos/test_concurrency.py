"""Races on purpose, on PostgreSQL: one order sent five times at once, one campus
code at two terminals, a hundred wallet payments at 32 terminals."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from payments import ledger
from payments.channel_log import ChannelCall
from payments.channels.campus import codes
from payments.pos.models import PosPayment

from .conftest import new_order_no

pytestmark = pytest.mark.postgres


def test_the_same_order_sent_five_times_at_once_pays_once(
    live_app, live_terminal, session, merchant, fast_poll
):
    code = live_app.sandbox.gateways["wechat"].current_code("demo-1")
    order_no = new_order_no()

    with ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(lambda _: live_terminal.pay(700, order_no, code=code), range(5))
        )

    assert {answer["out_trade_no"] for _, answer in answers} == {
        answers[0][1]["out_trade_no"]
    }
    assert all(status in {200, 202} for status, _ in answers)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(PosPayment)) == 1
    calls = session.scalars(
        select(ChannelCall).where(ChannelCall.operation == "pay_with_code")
    ).all()
    assert len(calls) == 1
    assert merchant.payable.balance_fen == 700
    assert ledger.check_ledger(session) == []


def test_one_campus_code_at_two_terminals_at_once(
    live_app, make_terminal, session, make_card
):
    card = make_card(balance_fen=5000)
    now = live_app.app.extensions["payments.pos"].now()
    code, _ = codes.issue_code(session, card.id, now=now, lifetime_seconds=60)
    session.commit()
    tills = [make_terminal(url=live_app.url, served=live_app.app) for _ in range(2)]

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda till: till.pay(1000, code=code)[1], tills))

    states = sorted((a["state"], a["failure_code"]) for a in answers)
    assert states == [("failed", "campus_code_used"), ("succeeded", None)]
    session.rollback()
    assert card.wallet.balance_fen == 4000


def test_a_hundred_wallet_payments_at_32_terminals_never_overdraw(
    live_app, make_terminal, session, make_card, merchant
):
    cards = [make_card(balance_fen=1000) for _ in range(10)]
    tills = [make_terminal(url=live_app.url, served=live_app.app) for _ in range(32)]
    jobs = [(tills[i % 32], cards[i % 10].number) for i in range(100)]

    def pay(job):
        till, number = job
        return till.pay(300, card_number=number)[1]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(pay, jobs))

    succeeded = [a for a in answers if a["state"] == "succeeded"]
    refused = {a["failure_code"] for a in answers if a["state"] == "failed"}
    assert len(succeeded) == 30  # three of ten 3-yuan payments fit in 10 yuan
    assert refused == {"insufficient_funds"}
    session.rollback()
    for card in cards:
        session.refresh(card.wallet)
        assert card.wallet.balance_fen == 100
    assert merchant.payable.balance_fen == 9000
    assert ledger.check_ledger(session) == []
