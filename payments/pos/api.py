"""The POS JSON API: signed terminal endpoints and operators' refund endpoints.

Terminal endpoints (``/api/terminal/…``) need the request signature described in
``payments.pos.terminal_auth`` and in the OpenAPI description's security scheme
``terminalSignature``; it is checked before the body is even parsed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from apiflask import APIBlueprint, Schema, fields
from apiflask.schema_adapters.marshmallow import parser
from apiflask.validators import Length, OneOf, Range
from flask import Response, jsonify, request, url_for
from flask_babel import lazy_gettext

from campus.auth import Role, current_operator, requires_role
from campus.database import db
from campus.errors import CampusError, InvalidInput, problem_response
from payments import purse
from payments.merchants import Merchant, find_merchant
from payments.pos import refunds, service
from payments.pos.config import pos_config
from payments.pos.models import PaymentState, PosPayment, RefundDestination
from payments.pos.terminal_auth import current_terminal

SIGNED = "terminalSignature"
SECURITY_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "X-Signature",
    "description": (
        "终端签名。Every terminal request carries X-Terminal-Key (key id), "
        "X-Timestamp (Unix seconds, within 300 s of the server's clock), X-Nonce "
        "(16–64 of [A-Za-z0-9_-], never reused; remembered in the database) and "
        "X-Signature = base64(HMAC-SHA256(secret, METHOD \\n PATH[?QUERY] \\n "
        "TIMESTAMP \\n NONCE \\n hex(SHA-256(body)))). Stale timestamps, reused "
        "nonces and disabled terminals are refused with 401/403. See docs/pos.md."
    ),
}

bp = APIBlueprint("pos_api", __name__, tag="POS terminal")
operator_bp = APIBlueprint("pos_operator_api", __name__, tag="POS refunds")


# Endpoints that remember the request's nonce in their own writing transaction
# (two transactions fewer per payment); ``_nonce_remembered`` is the backstop.
_NONCE_IN_TRANSACTION = frozenset({"pos_api.pay"})


@bp.before_request
def _signed() -> None:
    current_terminal(defer_nonce=request.endpoint in _NONCE_IN_TRANSACTION)


@bp.after_request
def _nonce_remembered(response: Response) -> Response:
    """Remember a nonce the endpoint did not: a request refused before it could
    have any effect (invalid input, an unrecognised code). Its replay is then
    refused as a replay, as when every nonce was remembered up front."""
    signed_by = request.environ.get("campus.terminal")
    if signed_by is None or signed_by.nonce is None or signed_by.nonce.done:
        return response
    try:
        signed_by.remember_nonce_now()
    except CampusError as refusal:
        return problem_response(refusal.problem())
    return response


class PaymentIn(Schema):
    order_no = fields.String(
        required=True,
        validate=Length(1, 64),
        metadata={
            "description": "the terminal's own order number, unique per terminal"
        },
    )
    amount_fen = fields.Integer(required=True, validate=Range(min=1))
    code = fields.String(
        load_default=None,
        validate=Length(1, 64),
        metadata={"description": "the scanned payment code (WeChat, Alipay, campus)"},
    )
    card_number = fields.String(
        load_default=None, metadata={"description": "a campus card tapped instead"}
    )
    pin = fields.String(load_default=None, metadata={"description": "card PIN"})
    description = fields.String(
        load_default=service.DESCRIPTION, validate=Length(1, 64)
    )


class PaymentOut(Schema):
    out_trade_no = fields.String()
    order_no = fields.String(allow_none=True)
    state = fields.String(metadata={"enum": [state.value for state in PaymentState]})
    channel = fields.String(allow_none=True)
    source = fields.String()
    amount_fen = fields.Integer()
    refunded_fen = fields.Integer()
    code = fields.String(allow_none=True, metadata={"description": "masked"})
    transaction_id = fields.String(allow_none=True)
    failure_code = fields.String(allow_none=True)
    failure_message = fields.String(allow_none=True)
    created_at = fields.DateTime()
    paid_at = fields.DateTime(allow_none=True)
    checkout_url = fields.String(allow_none=True)


class PayHeaders(Schema):
    """The optional request headers of ``pay``; described here, read by hand."""

    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=Length(1, 64),
        metadata={"description": "returns the first payment made with this key"},
    )
    prefer = fields.String(
        data_key="Prefer",
        metadata={
            "description": "`respond-async` (RFC 7240): while the payer enters the "
            "password, answer 202 `paying` at once with `Preference-Applied: "
            "respond-async` and keep waiting on the server; ask with the query "
            "endpoint"
        },
    )


def _prefers_async() -> bool:
    """Whether a ``Prefer`` header (RFC 7240) holds ``respond-async``: preferences
    are separated by commas, each a case-insensitive token, perhaps with ``=value``
    and ``;`` parameters."""
    for header in request.headers.getlist("Prefer"):
        for preference in header.split(","):
            token = preference.split(";", 1)[0].split("=", 1)[0]
            if token.strip().lower() == "respond-async":
                return True
    return False


def _body_hash(body: dict[str, Any]) -> str:
    """The request's digest, taken of what it asks (its fields as read, in one
    order and spelling) rather than of its bytes: the same JSON sent again with
    its keys in another order or other spaces is the same request."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return service.request_digest(canonical.encode())


def _answer(payment: PosPayment) -> Response:
    """The payment as ``PaymentOut`` dumps it, built by hand: every field is a
    string, an integer, ``None`` or a datetime (ISO 8601, as marshmallow writes
    it), and skipping the schema saves a twentieth of a payment's CPU."""
    body = service.payment_out(payment)
    if payment.qr_token:
        body["checkout_url"] = qr_url(payment.qr_token)
    response = jsonify(
        {
            key: value.isoformat() if isinstance(value, dt.datetime) else value
            for key, value in body.items()
        }
    )
    response.status_code = (
        202 if payment.state in {PaymentState.PAYING, PaymentState.AWAITING} else 200
    )
    return response


_PAYMENT_IN = PaymentIn()
_PAYMENT_KEYS = frozenset(_PAYMENT_IN.fields)


def _payment_in(data: Any) -> dict[str, Any]:
    """The body as ``PaymentIn`` loads it. A body of plain, valid values (what a
    terminal sends) is checked here by hand, with the schema's own rules; any
    other goes through the schema as ``@bp.input`` would, and is answered with
    its 400 and field errors."""
    if type(data) is dict and data.keys() <= _PAYMENT_KEYS:
        order_no, amount = data.get("order_no"), data.get("amount_fen")
        code = data.get("code")
        description = data.get("description", service.DESCRIPTION)
        if (
            _text(order_no, 64)
            and type(amount) is int
            and amount >= 1
            and (code is None or _text(code, 64))
            and all(
                data.get(name) is None or type(data[name]) is str
                for name in ("card_number", "pin")
            )
            and _text(description, 64)
        ):
            return {
                "order_no": order_no,
                "amount_fen": amount,
                "code": code,
                "card_number": data.get("card_number"),
                "pin": data.get("pin"),
                "description": description,
            }
    loaded: dict[str, Any] = parser.parse(_PAYMENT_IN, request, location="json")
    return loaded


def _text(value: Any, longest: int) -> bool:
    return type(value) is str and 1 <= len(value) <= longest


def qr_url(token: str) -> str:
    return url_for("pos_pages.qr_checkout", token=token, _external=True)


@bp.post("/api/terminal/payments")
# Described by the schemas, checked and answered by ``_payment_in`` and ``_answer``.
@bp.input(PaymentIn, arg_name="body", validation=False)
@bp.input(PayHeaders, location="headers", arg_name="headers", validation=False)
@bp.output(PaymentOut)
@bp.doc(
    summary="Take a payment (code or card tap)",
    description="Answers 200 with `succeeded`, `failed` (with the channel's "
    "reason) or `reversed` (unknown at the deadline, then reversed / cancelled: "
    "nothing taken), or 202 `paying` when the outcome is still unknown after the "
    "deadline's reverse could not finish; ask again with the query endpoint. "
    "While the payer enters the password (WeChat USERPAYING, Alipay 10003) the "
    "request is held, the channel queried, up to the deadline (about 45 s).\n\n"
    "With `Prefer: respond-async` (RFC 7240) such a payment is answered at once: "
    "202 `paying` with `Preference-Applied: respond-async`, `Location` (the "
    "query endpoint) and `Retry-After` (seconds); the server goes on querying, "
    "and reverses / cancels at the deadline, as it would have before answering. "
    "Any other outcome, a timeout from the channel, or a server with no waiter "
    "free answers as without the header (no `Preference-Applied`).\n\n"
    "The same order number or `Idempotency-Key` returns the first payment as it "
    "stands (also while it is still waited for; it is never paid twice); with a "
    "different body it is refused (422 `idempotency_mismatch`).",
    security=SIGNED,
    responses={
        200: "Succeeded, failed or reversed",
        202: {
            "description": "Still paying: ask with the query endpoint",
            "content": {"application/json": {"schema": PaymentOut}},
        },
        400: "Invalid input or an unrecognised code",
        401: "Signature refused",
        403: "Terminal disabled",
        422: "Idempotency mismatch",
    },
)
def pay(body: Any, headers: Any = None) -> Response:
    terminal = current_terminal()
    body = _payment_in(body)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 64:
        raise InvalidInput(lazy_gettext("Idempotency-Key is 1 to 64 characters."))
    taken = service.take_payment(
        terminal,
        service.PayRequest(
            order_no=body["order_no"],
            amount_fen=body["amount_fen"],
            body_hash=_body_hash(body),
            code=body["code"],
            card_number=body["card_number"],
            pin=body["pin"],
            idempotency_key=key,
            description=body["description"],
            respond_async=_prefers_async(),
        ),
    )
    response = _answer(taken.payment)
    if taken.in_background:
        response.headers["Preference-Applied"] = "respond-async"
        response.headers["Location"] = url_for(
            "pos_api.query", order_no=taken.payment.terminal_order_no
        )
        response.headers["Retry-After"] = str(pos_config().poll_interval_seconds)
    return response


@bp.get("/api/terminal/payments/<order_no>")
@bp.output(PaymentOut)
@bp.doc(
    summary="Query a payment by the terminal's order number",
    description="Asks the channel first while the payment is `paying`; after a "
    "`respond-async` answer, this is how the terminal follows the payment.",
    security=SIGNED,
)
def query(order_no: str) -> Response:
    terminal = current_terminal()
    payment = service.terminal_payment(db.session(), terminal.id, order_no)
    return _answer(service.refresh(payment.out_trade_no))


class QrOrderIn(Schema):
    order_no = fields.String(required=True, validate=Length(1, 64))
    amount_fen = fields.Integer(required=True, validate=Range(min=1))


@bp.post("/api/terminal/qr-orders")
@bp.input(QrOrderIn, arg_name="body")
@bp.output(PaymentOut)
@bp.doc(
    summary="Open a dynamic aggregated-QR order",
    description="Show `checkout_url` as a QR code; any app (WeChat, Alipay, a "
    "browser with campus sign-in) pays it. Learn the result through the query "
    "endpoint.",
    security=SIGNED,
)
def open_qr(body: dict[str, Any]) -> Response:
    terminal = current_terminal()
    payment = service.open_qr_order(
        db.session.get_one(Merchant, terminal.merchant_id),
        body["amount_fen"],
        terminal_id=terminal.id,
        order_no=body["order_no"],
        body_hash=_body_hash(body),
    )
    return _answer(payment)


class LoadOut(Schema):
    id = fields.Integer()
    amount_fen = fields.Integer()
    loaded_fen = fields.Integer()
    remaining_fen = fields.Integer()
    state = fields.String()


class PendingLoadOut(LoadOut):
    pass


class LoadsOut(Schema):
    card = fields.String()
    loads = fields.List(fields.Nested(PendingLoadOut))


def _load_out(load: purse.PurseLoad) -> dict[str, Any]:
    return {
        "id": load.id,
        "amount_fen": load.amount_fen,
        "loaded_fen": load.loaded_fen,
        "remaining_fen": load.remaining_fen,
        "state": load.state.value,
    }


@bp.get("/api/terminal/cards/<number>/pending-loads")
@bp.output(LoadsOut)
@bp.doc(summary="A card's loads waiting to be written to its chip", security=SIGNED)
def pending_loads(number: str) -> dict[str, Any]:
    loads = purse.pending_loads(db.session(), number)
    return {"card": number, "loads": [_load_out(load) for load in loads]}


class ConfirmIn(Schema):
    amount_fen = fields.Integer(required=True, validate=Range(min=1))
    confirmation_id = fields.String(required=True, validate=Length(1, 64))


@bp.post("/api/terminal/cards/<number>/pending-loads/<int:load_id>/confirm")
@bp.input(ConfirmIn, arg_name="body")
@bp.output(LoadOut)
@bp.doc(
    summary="Confirm an amount written to the chip",
    description="Idempotent per `confirmation_id`; never more than is pending.",
    security=SIGNED,
    responses=[404, 409],
)
def confirm_load(number: str, load_id: int, body: dict[str, Any]) -> dict[str, Any]:
    terminal = current_terminal()
    with db.transaction() as session:
        load = purse.confirm_load(
            session,
            number,
            load_id,
            body["amount_fen"],
            confirmation_id=body["confirmation_id"],
            terminal=terminal.key_id,
        )
        answer = _load_out(load)
    return answer


# -- operators ---------------------------------------------------------------------


class RefundIn(Schema):
    amount_fen = fields.Integer(required=True, validate=Range(min=1))
    destination = fields.String(
        load_default="original", validate=OneOf([d.value for d in RefundDestination])
    )
    card_number = fields.String(load_default=None)
    reason = fields.String(load_default=None, validate=Length(max=255))


class RefundOut(Schema):
    out_refund_no = fields.String()
    out_trade_no = fields.String()
    amount_fen = fields.Integer()
    channel = fields.String()
    destination = fields.String()
    state = fields.String()
    refund_id = fields.String(allow_none=True)
    failure = fields.String(allow_none=True)
    operator = fields.String()
    created_at = fields.DateTime()


@operator_bp.post("/api/pos/payments/<out_trade_no>/refunds")
@operator_bp.input(RefundIn, arg_name="body")
@operator_bp.output(RefundOut, status_code=201)
@operator_bp.doc(
    summary="Refund a POS payment in full or in part",
    security="session",
    responses=[401, 403, 404, 409],
)
@requires_role(Role.CASHIER, Role.FINANCE)
def refund(out_trade_no: str, body: dict[str, Any]) -> dict[str, Any]:
    operator = current_operator()
    assert operator is not None
    made = refunds.open_refund(
        out_trade_no,
        body["amount_fen"],
        operator=operator,
        destination=RefundDestination(body["destination"]),
        card_number=body["card_number"],
        reason=body["reason"],
    )
    return refunds.refund_out(made)


@operator_bp.get("/api/pos/refunds/<out_refund_no>")
@operator_bp.output(RefundOut)
@operator_bp.doc(
    summary="A refund, asking the channel while it is processing",
    description="For a cashier or finance, a refund still processing is asked "
    "about (or, from the wallet, settled) first; an auditor reads it as it stands.",
)
@requires_role(Role.CASHIER, Role.FINANCE, Role.AUDITOR)
def get_refund(out_refund_no: str) -> dict[str, Any]:
    operator = current_operator()
    if operator is not None and operator.has_role(Role.CASHIER, Role.FINANCE):
        return refunds.refund_out(refunds.refresh_refund(out_refund_no))
    # Read only: asking the channel or settling a stuck wallet refund writes.
    return refunds.refund_out(refunds.find_refund(db.session(), out_refund_no))


class DayPaymentOut(PaymentOut):
    pass


class DayOut(Schema):
    merchant = fields.String()
    payments = fields.List(fields.Nested(DayPaymentOut))


@operator_bp.get("/api/pos/merchants/<code>/payments")
@operator_bp.output(DayOut)
@operator_bp.doc(summary="A merchant's payments of the current business day")
@requires_role(Role.CASHIER, Role.FINANCE, Role.AUDITOR)
def merchant_day(code: str) -> dict[str, Any]:
    from payments.pos.pages import payments_of_day

    merchant = find_merchant(db.session(), code)
    return {
        "merchant": merchant.code,
        "payments": [
            service.payment_out(p)
            for p in payments_of_day(merchant, pos_config().now())
        ],
    }
