"""The terminal signature: accepted when right; refused when replayed, stale,
forged or from a disabled terminal. And the purse endpoints behind it."""

from __future__ import annotations

import json

from payments.merchants import Terminal
from payments.purse import add_pending_load

from .conftest import new_order_no


def test_a_signed_request_is_served(terminal, make_card):
    card = make_card(balance_fen=1000)

    status, answer = terminal.pay(300, card_number=card.number)

    assert status == 200
    assert answer["state"] == "succeeded"


def test_a_replayed_request_is_refused(terminal, make_card):
    card = make_card(balance_fen=1000)
    body = {"order_no": new_order_no(), "amount_fen": 300, "card_number": card.number}
    raw = json.dumps(body).encode()
    headers = terminal.headers("POST", "/api/terminal/payments", raw)

    first = terminal.send("POST", "/api/terminal/payments", body, signed=headers)
    replay = terminal.send("POST", "/api/terminal/payments", body, signed=headers)

    assert first[0] == 200
    assert replay[0] == 401
    assert replay[1]["code"] == "terminal_signature_refused"
    assert replay[1]["reason"] == "nonce"


def test_a_stale_timestamp_is_refused(terminal):
    raw = b""
    old = terminal.headers(
        "GET", "/api/terminal/payments/x", raw, timestamp=terminal.stamp() - 301
    )

    status, answer = terminal.send("GET", "/api/terminal/payments/x", signed=old)

    assert status == 401
    assert answer["reason"] == "stale"


def test_a_changed_body_breaks_the_signature(terminal, make_card):
    card = make_card(balance_fen=1000)
    body = {"order_no": new_order_no(), "amount_fen": 300, "card_number": card.number}
    headers = terminal.headers(
        "POST", "/api/terminal/payments", json.dumps(body).encode()
    )

    status, answer = terminal.send(
        "POST", "/api/terminal/payments", {**body, "amount_fen": 301}, signed=headers
    )

    assert status == 401
    assert answer["reason"] == "signature"
    assert card.wallet.balance_fen == 1000


def test_an_unsigned_request_is_refused(client):
    response = client.get("/api/terminal/payments/x")

    assert response.status_code == 401


def test_a_disabled_terminal_is_refused(terminal, session):
    row = session.query(Terminal).filter_by(key_id=terminal.key_id).one()
    row.enabled = False
    session.commit()

    status, answer = terminal.query("whatever")

    assert status == 403
    assert answer["code"] == "terminal_disabled"


def test_pending_loads_are_listed(terminal, make_card, session):
    card = make_card(offline_purse=True)
    add_pending_load(session, card, 2000, None)
    session.commit()

    status, answer = terminal.send(
        "GET", f"/api/terminal/cards/{card.number}/pending-loads"
    )

    assert status == 200
    assert [load["remaining_fen"] for load in answer["loads"]] == [2000]


def test_a_load_confirmation_is_idempotent_and_bounded(terminal, make_card, session):
    card = make_card(balance_fen=2000, offline_purse=True)
    load = add_pending_load(session, card, 2000, None)
    session.commit()
    path = f"/api/terminal/cards/{card.number}/pending-loads/{load.id}/confirm"

    first = terminal.send("POST", path, {"amount_fen": 1500, "confirmation_id": "c1"})
    again = terminal.send("POST", path, {"amount_fen": 1500, "confirmation_id": "c1"})
    too_much = terminal.send("POST", path, {"amount_fen": 600, "confirmation_id": "c2"})

    assert first == (200, {**first[1], "loaded_fen": 1500, "remaining_fen": 500})
    assert again[1]["loaded_fen"] == 1500
    assert too_much[0] == 409
    session.rollback()
    assert load.loaded_fen == 1500
