"""Operators manage cards through the API; each refusal is clear and writes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from campus.auth import Role
from payments.cards import CardStatus, CardStatusChange


def _changes(session) -> int:
    return session.scalar(select(func.count()).select_from(CardStatusChange))


def test_nobody_signed_in_is_asked_to_sign_in(client, make_card):
    card = make_card()

    response = client.get(f"/api/cards/{card.number}")

    assert response.status_code == 401
    assert response.json["code"] == "authentication_required"


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.FINANCE, True),
        (Role.AUDITOR, True),
        (Role.CASHIER, True),
        (Role.REGISTRAR, False),
        (Role.ADMIN, True),
    ],
)
def test_reading_a_card_needs_a_money_role(
    client, make_card, sign_in_operator, role, allowed
):
    card = make_card(balance_fen=1234)
    sign_in_operator(role)

    response = client.get(f"/api/cards/{card.number}")

    if allowed:
        assert response.status_code == 200
        assert response.json["balance_fen"] == 1234
        assert response.json["balance_yuan"] == "12.34"
        assert response.json["statement"][0]["amount_fen"] == 1234
    else:
        assert response.status_code == 403
        assert response.json["code"] == "forbidden"


def test_a_cashier_freezes_and_unfreezes_with_history(
    client, session, make_card, sign_in_operator
):
    card = make_card()
    sign_in_operator(Role.CASHIER)

    frozen = client.post(
        f"/api/cards/{card.number}/status",
        json={"status": "frozen", "reason": "holder lost it"},
    )
    active = client.post(
        f"/api/cards/{card.number}/status",
        json={"status": "active", "reason": "found again"},
    )

    assert frozen.json["status"] == "frozen" and active.json["status"] == "active"
    session.refresh(card)
    assert [(c.from_status, c.to_status) for c in card.history] == [
        (None, CardStatus.ACTIVE),
        (CardStatus.ACTIVE, CardStatus.FROZEN),
        (CardStatus.FROZEN, CardStatus.ACTIVE),
    ]
    assert card.history[1].reason == "holder lost it"
    assert card.history[1].changed_by.startswith("operator:op")


def test_a_cashier_may_not_close_a_card(client, session, make_card, sign_in_operator):
    card = make_card()
    sign_in_operator(Role.CASHIER)
    before = _changes(session)

    response = client.post(
        f"/api/cards/{card.number}/status",
        json={"status": "closed", "reason": "graduated"},
    )

    assert response.status_code == 403
    assert _changes(session) == before


def test_an_auditor_reads_but_changes_nothing(
    client, session, make_card, sign_in_operator
):
    card = make_card()
    sign_in_operator(Role.AUDITOR)
    before = _changes(session)

    response = client.post(
        f"/api/cards/{card.number}/status",
        json={"status": "frozen", "reason": "curious"},
    )

    assert response.status_code == 403
    assert _changes(session) == before


def test_a_card_with_money_cannot_be_closed(
    client, session, make_card, sign_in_operator
):
    card = make_card(balance_fen=1)
    sign_in_operator(Role.ADMIN)
    before = _changes(session)

    response = client.post(
        f"/api/cards/{card.number}/status",
        json={"status": "closed", "reason": "graduated"},
    )

    assert response.status_code == 409
    assert response.json["code"] == "invalid_card_transition"
    assert response.json["balance_fen"] == 1
    assert _changes(session) == before


def test_a_closed_card_stays_closed(client, make_card, sign_in_operator):
    card = make_card()
    sign_in_operator(Role.ADMIN)
    client.post(
        f"/api/cards/{card.number}/status",
        json={"status": "closed", "reason": "graduated"},
    )

    response = client.post(
        f"/api/cards/{card.number}/status", json={"status": "active", "reason": "oops"}
    )

    assert response.status_code == 409


def test_unknown_cards_are_not_found(client, session, sign_in_operator):
    sign_in_operator(Role.ADMIN)
    before = _changes(session)

    response = client.post(
        "/api/cards/000000000/status", json={"status": "frozen", "reason": "x"}
    )

    assert response.status_code == 404
    assert response.json["code"] == "card_not_found"
    assert _changes(session) == before


def test_a_status_change_needs_a_reason_and_a_known_status(
    client, make_card, sign_in_operator
):
    card = make_card()
    sign_in_operator(Role.ADMIN)

    blank = client.post(
        f"/api/cards/{card.number}/status", json={"status": "frozen", "reason": "  "}
    )
    unknown = client.post(
        f"/api/cards/{card.number}/status", json={"status": "melted", "reason": "x"}
    )

    assert blank.status_code == 400 and blank.json["code"] == "invalid_input"
    assert unknown.status_code == 400


def test_an_admin_opens_a_card_for_a_known_person(
    client, session, make_card, sign_in_operator
):
    holder = make_card().person
    sign_in_operator(Role.ADMIN)

    opened = client.post(
        "/api/cards", json={"holder_number": holder.number, "number": "77770001"}
    )
    unknown = client.post("/api/cards", json={"holder_number": "nobody"})
    duplicate = client.post(
        "/api/cards", json={"holder_number": holder.number, "number": "77770001"}
    )

    assert opened.status_code == 201 and opened.json["balance_fen"] == 0
    assert unknown.status_code == 404
    assert duplicate.status_code == 409


def test_finance_checks_the_ledger(client, make_card, sign_in_operator):
    make_card(balance_fen=500)
    sign_in_operator(Role.FINANCE)

    response = client.get("/api/ledger/check")

    assert response.json == {"balanced": True, "problems": []}


def test_wrong_password_is_refused_without_saying_which_part(client, session):
    from campus.auth import create_operator

    create_operator(session, "clerk", "right password", [Role.CASHIER])
    session.commit()

    wrong = client.post(
        "/api/operators/sign-in",
        json={"username": "clerk", "password": "wrong password"},
    )
    unknown = client.post(
        "/api/operators/sign-in",
        json={"username": "nobody", "password": "right password"},
    )

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json["detail"] == unknown.json["detail"]
