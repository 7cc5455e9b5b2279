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


def test_a_terminal_disabled_after_paying_is_refused_at_its_next_payment(
    terminal, make_card, session
):
    # The first payment keeps the terminal's secret in the process; whether it
    # is enabled is read again, in the payment's own transaction.
    card = make_card(balance_fen=1000)
    assert terminal.pay(300, card_number=card.number)[0] == 200
    row = session.query(Terminal).filter_by(key_id=terminal.key_id).one()
    row.enabled = False
    session.commit()

    status, answer = terminal.pay(300, card_number=card.number)

    assert (status, answer["code"]) == (403, "terminal_disabled")
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 700


def test_a_changed_secret_is_accepted_at_once(terminal, make_card, session):
    card = make_card(balance_fen=1000)
    assert terminal.pay(300, card_number=card.number)[0] == 200
    row = session.query(Terminal).filter_by(key_id=terminal.key_id).one()
    row.secret = "another-secret-set-by-hand"
    session.commit()
    old_secret, terminal.secret = terminal.secret, row.secret

    status, _ = terminal.pay(300, card_number=card.number)

    assert status == 200
    terminal.secret = old_secret
    assert terminal.pay(300, card_number=card.number)[0] == 401


def test_a_replayed_refused_payment_is_refused_as_a_replay(terminal, make_card):
    # Refused before anything is written (no card number or code), yet its nonce
    # is used up: the replay is told so, not answered again.
    body = {"order_no": new_order_no(), "amount_fen": 300}
    headers = terminal.headers(
        "POST", "/api/terminal/payments", json.dumps(body).encode()
    )

    first = terminal.send("POST", "/api/terminal/payments", body, signed=headers)
    replay = terminal.send("POST", "/api/terminal/payments", body, signed=headers)

    assert first[0] == 400
    assert (replay[0], replay[1]["reason"]) == (401, "nonce")


def test_a_replayed_invalid_payment_is_refused_as_a_replay(terminal):
    body = {"order_no": new_order_no(), "amount_fen": 0}
    headers = terminal.headers(
        "POST", "/api/terminal/payments", json.dumps(body).encode()
    )

    first = terminal.send("POST", "/api/terminal/payments", body, signed=headers)
    replay = terminal.send("POST", "/api/terminal/payments", body, signed=headers)

    assert (first[0], first[1]["code"]) == (400, "invalid_input")
    assert "amount_fen" in first[1]["errors"]["json"]
    assert (replay[0], replay[1]["reason"]) == (401, "nonce")


def test_a_payment_repeated_with_a_new_nonce_answers_the_first(terminal, make_card):
    card = make_card(balance_fen=1000)
    order_no = new_order_no()

    first = terminal.pay(300, order_no=order_no, card_number=card.number)
    again = terminal.pay(300, order_no=order_no, card_number=card.number)

    assert first[1]["out_trade_no"] == again[1]["out_trade_no"]
    assert again[1]["state"] == "succeeded"
    card_wallet = card.wallet
    assert card_wallet.balance_fen == 700


def test_a_replayed_repeat_of_a_paid_order_is_refused_as_a_replay(terminal, make_card):
    # The repeat's own transaction is rolled back on the order number's unique
    # index; its nonce is remembered all the same.
    card = make_card(balance_fen=1000)
    body = {"order_no": new_order_no(), "amount_fen": 300, "card_number": card.number}
    assert terminal.send("POST", "/api/terminal/payments", body)[0] == 200
    headers = terminal.headers(
        "POST", "/api/terminal/payments", json.dumps(body).encode()
    )

    repeat = terminal.send("POST", "/api/terminal/payments", body, signed=headers)
    replay = terminal.send("POST", "/api/terminal/payments", body, signed=headers)

    assert (repeat[0], repeat[1]["state"]) == (200, "succeeded")
    assert (replay[0], replay[1]["reason"]) == (401, "nonce")


def test_a_replayed_refused_wallet_payment_is_refused_as_a_replay(terminal, make_card):
    card = make_card(balance_fen=100)
    body = {"order_no": new_order_no(), "amount_fen": 300, "card_number": card.number}
    headers = terminal.headers(
        "POST", "/api/terminal/payments", json.dumps(body).encode()
    )

    first = terminal.send("POST", "/api/terminal/payments", body, signed=headers)
    replay = terminal.send("POST", "/api/terminal/payments", body, signed=headers)

    assert (first[0], first[1]["state"]) == (200, "failed")
    assert first[1]["failure_code"] == "insufficient_funds"
    assert (replay[0], replay[1]["reason"]) == (401, "nonce")
