"""Card and ledger endpoints for operators, and the signed-in student's own card."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema, fields
from apiflask.validators import OneOf
from flask_babel import gettext

from campus.auth import (
    Role,
    current_operator,
    current_student,
    requires_role,
    requires_student,
)
from campus.database import db
from campus.errors import NotFound
from campus.people import find_person
from payments import ledger
from payments.cards import (
    Card,
    CardStatus,
    cards_of,
    change_status,
    find_card,
    open_card,
)
from payments.money import format_yuan

bp = APIBlueprint("cards", __name__, tag="Cards", url_prefix="/api")


class CardOut(Schema):
    number = fields.String()
    holder_number = fields.String()
    holder_name_zh = fields.String()
    holder_name_en = fields.String()
    status = fields.String(metadata={"enum": [status.value for status in CardStatus]})
    balance_fen = fields.Integer(metadata={"description": "integer fen"})
    balance_yuan = fields.String(metadata={"description": "for display only"})
    offline_purse = fields.Boolean()


class StatementLineOut(Schema):
    entry_id = fields.Integer()
    at = fields.DateTime()
    kind = fields.String()
    order_ref = fields.String(allow_none=True)
    memo = fields.String(allow_none=True)
    amount_fen = fields.Integer()
    balance_fen = fields.Integer()


class CardWithStatement(CardOut):
    statement = fields.List(fields.Nested(StatementLineOut))


class OpenCardIn(Schema):
    holder_number = fields.String(required=True)
    number = fields.String(load_default=None)
    offline_purse = fields.Boolean(load_default=False)


class StatusChangeIn(Schema):
    status = fields.String(
        required=True,
        validate=OneOf([status.value for status in CardStatus]),
    )
    reason = fields.String(required=True)


class LedgerCheckOut(Schema):
    balanced = fields.Boolean()
    problems = fields.List(fields.Dict())


def card_out(card: Card, with_statement: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "number": card.number,
        "holder_number": card.person.number,
        "holder_name_zh": card.person.name_zh,
        "holder_name_en": card.person.name_en,
        "status": card.status.value,
        "balance_fen": card.balance_fen,
        "balance_yuan": format_yuan(card.balance_fen),
        "offline_purse": card.offline_purse,
    }
    if with_statement:
        answer["statement"] = [
            line.__dict__ for line in ledger.statement(db.session, card.wallet, 50)
        ]
    return answer


def _actor() -> str:
    operator = current_operator()
    return f"operator:{operator.username}" if operator else "unknown"


@bp.post("/cards")
@bp.input(OpenCardIn, arg_name="request_body")
@bp.output(CardOut, status_code=201)
@bp.doc(
    summary="Open a card for a person",
    security="session",
    responses=[400, 401, 403, 404, 409],
)
@requires_role(Role.ADMIN)
def open_card_api(request_body: dict[str, Any]) -> dict[str, Any]:
    with db.transaction() as session:
        person = find_person(session, request_body["holder_number"])
        if person is None:
            raise NotFound(gettext("No such student or staff number."))
        card = open_card(
            session,
            person,
            actor=_actor(),
            number=request_body["number"],
            offline_purse=request_body["offline_purse"],
        )
    return card_out(card)


@bp.get("/cards/<number>")
@bp.output(CardWithStatement)
@bp.doc(
    summary="A card with its balance and recent statement", responses=[401, 403, 404]
)
@requires_role(Role.FINANCE, Role.AUDITOR, Role.CASHIER)
def get_card(number: str) -> dict[str, Any]:
    return card_out(find_card(db.session, number), with_statement=True)


@bp.post("/cards/<number>/status")
@bp.input(StatusChangeIn, arg_name="change")
@bp.output(CardOut)
@bp.doc(
    summary="Freeze, report lost, unfreeze or close a card",
    description="Cashiers may freeze, report lost and unfreeze; closing needs admin.",
    responses=[400, 401, 403, 404, 409],
)
@requires_role(Role.CASHIER)
def change_card_status(number: str, change: dict[str, str]) -> dict[str, Any]:
    wanted = CardStatus(change["status"])
    if wanted is CardStatus.CLOSED:
        return _close_card(number, change["reason"])
    with db.transaction() as session:
        card = change_status(
            session, number, wanted, reason=change["reason"], actor=_actor()
        )
    return card_out(card)


@requires_role(Role.ADMIN)
def _close_card(number: str, reason: str) -> dict[str, Any]:
    with db.transaction() as session:
        card = change_status(
            session, number, CardStatus.CLOSED, reason=reason, actor=_actor()
        )
    return card_out(card)


@bp.get("/ledger/check")
@bp.output(LedgerCheckOut)
@bp.doc(
    summary="Trial balance and cached balances against postings", responses=[401, 403]
)
@requires_role(Role.FINANCE, Role.AUDITOR)
def ledger_check() -> dict[str, Any]:
    problems = ledger.check_ledger(db.session)
    return {
        "balanced": not problems,
        "problems": [problem.__dict__ for problem in problems],
    }


@bp.get("/me/cards")
@bp.output(CardWithStatement(many=True))
@bp.doc(summary="The signed-in student's cards with statements", responses=[401])
@requires_student
def my_cards() -> list[dict[str, Any]]:
    person = current_student()
    assert person is not None
    return [
        card_out(card, with_statement=True) for card in cards_of(db.session, person)
    ]
