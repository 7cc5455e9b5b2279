"""Races on purpose, on PostgreSQL: one order sent five times at once, one campus
code at two terminals, a hundred wallet payments at 32 terminals, two refunds of
one payment at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select, text

from campus.auth import Role, create_operator
from campus.database import db
from payments import ledger
from payments.channel_log import ChannelCall
from payments.channels.campus import codes
from payments.pos import refunds
from payments.pos.models import PosPayment, PosRefund, RefundState

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


def test_two_refunds_at_once_never_pass_the_payment(
    live_app, live_terminal, session, make_card, merchant, monkeypatch
):
    card = make_card(balance_fen=1000)
    _, paid = live_terminal.pay(1000, card_number=card.number)
    create_operator(session, "fin", "correct horse battery", [Role.FINANCE])
    session.commit()
    desks = []
    for _ in range(2):
        desk = requests.Session()
        desk.post(
            f"{live_app.url}/api/operators/sign-in",
            json={"username": "fin", "password": "correct horse battery"},
            timeout=10,
        ).raise_for_status()
        desks.append(desk)

    # The first refund to hold the payment's row lock keeps it until the other
    # is seen waiting on a lock: the two overlap for sure, not by luck.
    may_refund, first, overlapped = refunds._may_refund, threading.Lock(), []

    def hold_until_the_other_waits(*args, **kwargs):
        if first.acquire(blocking=False):
            overlapped.append(_wait_for_a_lock_waiter())
        return may_refund(*args, **kwargs)

    monkeypatch.setattr(refunds, "_may_refund", hold_until_the_other_waits)
    url = f"{live_app.url}/api/pos/payments/{paid['out_trade_no']}/refunds"
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda desk: desk.post(url, json={"amount_fen": 600}, timeout=60),
                desks,
            )
        )

    assert overlapped == [True]
    assert sorted(answer.status_code for answer in answers) == [201, 409]
    refused = next(answer.json() for answer in answers if answer.status_code == 409)
    assert (refused["code"], refused["refundable_fen"]) == ("refund_refused", 400)
    session.rollback()
    assert session.scalar(select(PosPayment.refunded_fen)) == 600
    assert session.scalars(select(PosRefund.state)).all() == [RefundState.SUCCEEDED]
    assert card.wallet.balance_fen == 600
    assert merchant.payable.balance_fen == 400
    assert ledger.check_ledger(session) == []


def _wait_for_a_lock_waiter(seconds: float = 20) -> bool:
    """Whether another connection came to wait on a lock in this database."""
    deadline = time.monotonic() + seconds
    with db.engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            connection.rollback()
            if waiting:
                return True
            time.sleep(0.02)
    return False
