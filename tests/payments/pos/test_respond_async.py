"""``Prefer: respond-async`` on a code payment whose payer is entering the password:
answered at once, then waited for in a thread of the web process, over real HTTP
with the real SDKs and the sandbox. The thread's pauses move the sandbox clock
(``fast_poll``); a test ends the wait by joining the thread, never by sleeping."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
import requests
from sqlalchemy import func, select

from payments import ledger
from payments.channel_log import ChannelCall
from payments.pos.service import BackgroundWaits, background_waits, resolve_stale

from .conftest import in_app, new_order_no

PATH = "/api/terminal/payments"
ASYNC = {"Prefer": "respond-async"}


@dataclasses.dataclass
class Background:
    """The served app's background waits, and a gate that holds each of their
    pauses until ``finish`` opens it."""

    waits: BackgroundWaits
    gate: threading.Event
    hooks: list

    def hold(self) -> None:
        # A safety bound for a test that fails before opening the gate; no test
        # depends on it passing.
        self.hooks.append(lambda now: self.gate.wait(timeout=120))

    def finish(self) -> None:
        self.gate.set()
        assert self.waits.join(timeout=120), "a background wait did not end"
        assert self.waits.running() == []


@pytest.fixture
def background(live_app, fast_poll):
    found = Background(background_waits(live_app.app), threading.Event(), fast_poll)
    yield found
    # No thread may outlive the test's tables.
    found.gate.set()
    found.waits.join(timeout=120)


def _pay(terminal, amount_fen: int, order_no: str, code: str, headers=None):
    raw = json.dumps(
        {"order_no": order_no, "amount_fen": amount_fen, "code": code}
    ).encode()
    sent = terminal.headers("POST", PATH, raw)
    sent.update({"Content-Type": "application/json", **(headers or {})})
    return requests.post(terminal.url + PATH, data=raw, headers=sent, timeout=60)


def _code(live_app, channel: str) -> str:
    return live_app.sandbox.gateways[channel].current_code("demo-1")


def _operations(session, out_trade_no: str) -> list[tuple[str, str]]:
    session.rollback()
    return [
        (call.operation, call.outcome)
        for call in session.scalars(
            select(ChannelCall)
            .where(ChannelCall.out_trade_no == out_trade_no)
            .order_by(ChannelCall.id)
        )
    ]


def _entries(session, out_trade_no: str) -> int:
    session.rollback()
    return session.scalar(
        select(func.count())
        .select_from(ledger.JournalEntry)
        .where(ledger.JournalEntry.order_ref == out_trade_no)
    )


def _settled(session, merchant, channel: str, amount_fen: int) -> None:
    session.rollback()
    assert merchant.payable.balance_fen == amount_fen
    assert ledger.clearing_account(session, channel).balance_fen == -amount_fen
    assert ledger.check_ledger(session) == []


def test_wechat_userpaying_is_answered_at_once_and_paid_in_the_background(
    live_app, live_terminal, session, merchant, background
):
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 10)
    background.hold()
    order_no = new_order_no()

    answered = _pay(live_terminal, 600, order_no, _code(live_app, "wechat"), ASYNC)

    assert answered.status_code == 202
    assert answered.headers["Preference-Applied"] == "respond-async"
    assert answered.headers["Location"] == f"{PATH}/{order_no}"
    assert answered.headers["Retry-After"] == "3"
    body = answered.json()
    assert (body["state"], body["failure_code"]) == ("paying", None)
    assert background.waits.running() == [body["out_trade_no"]]
    # The payer is still typing: the query shows the payment in progress.
    status, asked = live_terminal.query(order_no)
    assert (status, asked["state"]) == (202, "paying")

    background.finish()

    status, asked = live_terminal.query(order_no)
    assert (status, asked["state"]) == (200, "succeeded")
    assert asked["transaction_id"]
    operations = [op for op, _ in _operations(session, body["out_trade_no"])]
    assert operations.count("pay_with_code") == 1 and "reverse" not in operations
    assert _entries(session, body["out_trade_no"]) == 1
    _settled(session, merchant, "wechat", 600)


def test_wechat_userpaying_past_the_deadline_is_reversed_in_the_background(
    live_app, live_terminal, session, merchant, background
):
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 600)
    order_no = new_order_no()

    answered = _pay(live_terminal, 600, order_no, _code(live_app, "wechat"), ASYNC)
    assert (answered.status_code, answered.json()["state"]) == (202, "paying")
    background.finish()

    status, asked = live_terminal.query(order_no)
    assert (status, asked["state"], asked["failure_code"]) == (
        200,
        "reversed",
        "reversed",
    )
    assert _operations(session, asked["out_trade_no"])[-1] == ("reverse", "ok")
    assert _entries(session, asked["out_trade_no"]) == 0
    _settled(session, merchant, "wechat", 0)


def test_alipay_10003_is_answered_at_once_and_cancelled_at_the_deadline(
    live_app, live_terminal, session, merchant, background
):
    live_app.sandbox.faults.set("alipay", "user_paying_seconds", 600)
    order_no = new_order_no()

    answered = _pay(live_terminal, 700, order_no, _code(live_app, "alipay"), ASYNC)
    assert answered.status_code == 202
    assert answered.headers["Preference-Applied"] == "respond-async"
    assert answered.json()["state"] == "paying"
    background.finish()

    status, asked = live_terminal.query(order_no)
    assert (status, asked["state"]) == (200, "reversed")
    operations = _operations(session, asked["out_trade_no"])
    assert operations[0] == ("pay_with_code", "ok")
    assert operations[-1] == ("reverse", "ok")
    assert _entries(session, asked["out_trade_no"]) == 0
    _settled(session, merchant, "alipay", 0)


def test_alipay_10003_paid_in_the_background(
    live_app, live_terminal, session, merchant, background
):
    live_app.sandbox.gateways["alipay"].set_password_needed("demo-1", 10)
    order_no = new_order_no()

    answered = _pay(live_terminal, 880, order_no, _code(live_app, "alipay"), ASYNC)
    assert (answered.status_code, answered.json()["state"]) == (202, "paying")
    background.finish()

    assert live_terminal.query(order_no)[1]["state"] == "succeeded"
    assert _entries(session, answered.json()["out_trade_no"]) == 1
    _settled(session, merchant, "alipay", 880)


def test_the_same_order_while_awaiting_returns_it_and_pays_once(
    live_app, live_terminal, session, merchant, background
):
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 10)
    background.hold()
    order_no, code = new_order_no(), _code(live_app, "wechat")
    first = _pay(live_terminal, 600, order_no, code, ASYNC)
    out_trade_no = first.json()["out_trade_no"]

    replays = [
        _pay(live_terminal, 600, order_no, code, ASYNC),
        _pay(live_terminal, 600, order_no, code),
    ]

    for replay in replays:
        assert replay.status_code == 202
        assert "Preference-Applied" not in replay.headers
        assert (replay.json()["out_trade_no"], replay.json()["state"]) == (
            out_trade_no,
            "paying",
        )
    assert background.waits.running() == [out_trade_no]
    background.finish()

    again = _pay(live_terminal, 600, order_no, code, ASYNC)
    assert (again.status_code, again.json()["state"]) == (200, "succeeded")
    assert again.json()["out_trade_no"] == out_trade_no
    operations = [op for op, _ in _operations(session, out_trade_no)]
    assert operations.count("pay_with_code") == 1
    assert _entries(session, out_trade_no) == 1
    _settled(session, merchant, "wechat", 600)


def test_the_same_idempotency_key_while_awaiting_returns_it(
    live_app, live_terminal, session, merchant, background
):
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 10)
    background.hold()
    order_no, code = new_order_no(), _code(live_app, "wechat")
    keyed = {**ASYNC, "Idempotency-Key": "k-" + order_no}
    first = _pay(live_terminal, 600, order_no, code, keyed)

    replay = _pay(live_terminal, 600, order_no, code, keyed)

    assert replay.status_code == 202
    assert replay.json()["out_trade_no"] == first.json()["out_trade_no"]
    background.finish()
    assert _entries(session, first.json()["out_trade_no"]) == 1
    _settled(session, merchant, "wechat", 600)


def test_without_the_header_the_request_waits_as_before(
    live_app, live_terminal, session, merchant, background
):
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 10)

    answered = _pay(
        live_terminal, 600, new_order_no(), _code(live_app, "wechat"), {"Prefer": "x"}
    )

    assert (answered.status_code, answered.json()["state"]) == (200, "succeeded")
    assert "Preference-Applied" not in answered.headers
    assert background.waits.running() == []
    _settled(session, merchant, "wechat", 600)


def test_a_payment_paid_at_once_is_answered_at_once_with_the_header(
    live_app, live_terminal, session, merchant, background
):
    answered = _pay(
        live_terminal, 1250, new_order_no(), _code(live_app, "wechat"), ASYNC
    )

    assert (answered.status_code, answered.json()["state"]) == (200, "succeeded")
    assert "Preference-Applied" not in answered.headers
    _settled(session, merchant, "wechat", 1250)


def test_with_every_waiter_taken_the_request_waits_itself(
    live_app, live_terminal, session, merchant, background
):
    background.waits.limit = 0
    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 10)

    answered = _pay(
        live_terminal,
        600,
        new_order_no(),
        _code(live_app, "wechat"),
        {"Prefer": "wait=10, Respond-Async"},
    )

    assert (answered.status_code, answered.json()["state"]) == (200, "succeeded")
    assert "Preference-Applied" not in answered.headers
    _settled(session, merchant, "wechat", 600)


def test_a_background_wait_that_dies_is_finished_by_the_stale_job(
    live_app, live_terminal, session, merchant, background
):
    class Crash(Exception):
        pass

    def crash(now):
        raise Crash

    live_app.sandbox.gateways["wechat"].set_password_needed("demo-1", 20)
    background.hooks.append(crash)
    order_no = new_order_no()
    answered = _pay(live_terminal, 330, order_no, _code(live_app, "wechat"), ASYNC)
    assert answered.status_code == 202
    background.finish()
    session.rollback()
    assert _entries(session, answered.json()["out_trade_no"]) == 0

    later = live_app.sandbox.clock.advance(300)
    report = in_app(live_app, lambda: resolve_stale(now=later))

    assert report.settled == 1
    assert live_terminal.query(order_no)[1]["state"] == "succeeded"
    _settled(session, merchant, "wechat", 330)
