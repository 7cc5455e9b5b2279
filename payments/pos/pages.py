"""POS pages for people: the student's payment code, the aggregated-QR checkout,
a web POS for demos, and the operator's list of a merchant's payments of the day.

The checkout page (``/pay/o/<token>``, reached from the merchant's static QR
``/pay/m/<code>`` or a terminal's dynamic QR) reads the user agent: inside WeChat it
runs WeChat's OAuth for the payer's openid and opens a JSAPI order; inside Alipay it
runs Alipay's user authorisation and opens an in-app order; any other browser gets
the campus sign-in and a wallet payment, or the plain instruction to scan with one
of the apps. A return from the channel never settles anything: the notification or
a query does, and the POS learns the result through its ``query``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any
from urllib.parse import urlencode

from apiflask import APIBlueprint
from flask import (
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext, lazy_gettext
from sqlalchemy import select

from campus.auth import Role, current_student, requires_role, requires_student
from campus.database import db
from campus.errors import CampusError, Forbidden, InvalidInput
from payments.cards import Card, cards_of
from payments.channels import channel_for
from payments.channels.base import PayerContext, PayerKind
from payments.channels.campus import codes, pin
from payments.channels.campus.barcode import itf_svg
from payments.merchants import Merchant, Terminal, find_merchant
from payments.money import format_yuan, parse_fen
from payments.pos import refunds, service
from payments.pos.config import pos_config
from payments.pos.models import (
    CashierMerchant,
    PaymentState,
    PosPayment,
    PosRefund,
    RefundDestination,
    RefundState,
)
from payments.pos.terminal_auth import SignedBy, TerminalDisabled
from payments.top_up_pages import payer_environment, qr_svg
from payments.topups import business_day_bounds

bp = APIBlueprint("pos_pages", __name__, template_folder="../templates")


def _own_card() -> Card:
    person = current_student()
    assert person is not None
    cards = cards_of(db.session, person)
    if not cards:
        abort(404)
    return cards[0]


# -- the student's payment code -------------------------------------------------


@bp.get("/card/pay-code")
@bp.doc(hide=True)
@requires_student
def pay_code_page() -> str:
    card = _own_card()
    return render_template(
        "pos/pay_code.html",
        card=card,
        format_yuan=format_yuan,
        message=request.args.get("message"),
    )


@bp.post("/card/pay-code/new")
@bp.doc(hide=True)
@requires_student
def new_pay_code() -> dict[str, Any]:
    """A fresh code for the signed-in student's card (the page asks every 30 s)."""
    config = pos_config()
    card = _own_card()
    card_id = card.id
    with db.transaction() as writer:
        code, expires_at = codes.issue_code(
            writer,
            card_id,
            now=config.now(),
            lifetime_seconds=config.campus_code_seconds,
        )
    return {
        "code": code,
        "expires_at": expires_at.isoformat(),
        "refresh_seconds": 30,
        "qr_svg": str(qr_svg(code)),
        "barcode_svg": str(itf_svg(code)),
    }


@bp.post("/card/pin")
@bp.doc(hide=True)
@requires_student
def set_card_pin() -> Any:
    card = _own_card()
    try:
        with db.transaction() as writer:
            pin.set_pin(
                writer, card.id, request.form.get("pin", ""), pos_config().now()
            )
    except InvalidInput as error:
        return redirect(url_for(".pay_code_page", message=str(error.detail)))
    return redirect(url_for(".pay_code_page", message=gettext("Card PIN saved.")))


# -- aggregated QR checkout -----------------------------------------------------


@bp.route("/pay/m/<merchant_code>", methods=["GET", "POST"])
@bp.doc(hide=True)
def static_qr(merchant_code: str) -> Any:
    merchant = find_merchant(db.session(), merchant_code)
    error = None
    if request.method == "POST":
        try:
            amount = parse_fen(request.form.get("amount", ""))
            payment = service.open_qr_order(merchant, amount)
        except CampusError as refusal:
            error = str(refusal.detail)
        else:
            return redirect(url_for(".qr_checkout", token=payment.qr_token))
    return render_template("pos/static_qr.html", merchant=merchant, error=error)


@bp.get("/pay/o/<token>")
@bp.doc(hide=True)
def qr_checkout(token: str) -> Any:
    payment = service.find_qr_order(db.session(), token)
    environment = payer_environment(request.headers.get("User-Agent", ""))
    if payment.state is PaymentState.AWAITING and environment in {"wechat", "alipay"}:
        state = secrets.token_urlsafe(16)
        session["pos_oauth"] = {"state": state, "token": token}
        back = url_for(".qr_oauth_return", channel=environment, _external=True)
        adapter: Any = channel_for(environment)
        if environment == "wechat":
            return redirect(adapter.authorize_url(back, state))
        return redirect(adapter.authorization_url(back, state))
    return _checkout_page(payment, environment)


def _checkout_page(payment: PosPayment, environment: str, **extra: Any) -> str:
    merchant = db.session.get_one(Merchant, payment.merchant_id)
    student = current_student()
    card = None
    if student is not None:
        found = cards_of(db.session, student)
        card = found[0] if found else None
    return render_template(
        "pos/checkout.html",
        payment=payment,
        merchant=merchant,
        environment=environment,
        card=card,
        needs_pin=payment.amount_fen > pos_config().pin_above_fen,
        format_yuan=format_yuan,
        **extra,
    )


@bp.get("/pay/oauth/<channel>")
@bp.doc(hide=True)
def qr_oauth_return(channel: str) -> Any:
    pending = session.pop("pos_oauth", None)
    if (
        channel not in {"wechat", "alipay"}
        or pending is None
        or request.args.get("state") != pending["state"]
    ):
        raise Forbidden(gettext("The authorisation did not come from this page."))
    adapter: Any = channel_for(channel)
    token = pending["token"]
    try:
        if channel == "wechat":
            payer = PayerContext(
                kind=PayerKind.JSAPI,
                openid=adapter.openid_for_code(request.args["code"]),
            )
        else:
            payer = PayerContext(
                kind=PayerKind.IN_APP,
                buyer_id=adapter.buyer_id(request.args["auth_code"]),
            )
    except KeyError:
        raise InvalidInput(gettext("The authorisation was cancelled.")) from None
    back = url_for(".qr_checkout", token=token, _external=True)
    payer = PayerContext(
        kind=payer.kind,
        openid=payer.openid,
        buyer_id=payer.buyer_id,
        client_ip=request.remote_addr or "127.0.0.1",
        return_url=back,
    )
    checkout = service.start_qr_payment(token, channel, payer)
    payment = service.find_qr_order(db.session(), token)
    return _checkout_page(
        payment,
        channel,
        cashier=_sandbox_cashier(payer.kind, checkout.jsapi_params, back),
    )


def _sandbox_cashier(kind: PayerKind, params: Any, back: str) -> str | None:
    """Where the in-app payment sheet would open; the JSAPI and in-app bridges
    exist only inside the real apps, so the sandbox offers a page instead."""
    if "campus.sandbox" not in current_app.extensions or not params:
        return None
    if kind is PayerKind.JSAPI:
        return "/sandbox/pay/wechat/jsapi?" + urlencode(
            {**params, "redirect_url": back}
        )
    if params.get("tradeNO"):
        return f"/sandbox/alipay/cashier?tradeNO={params['tradeNO']}"
    return None


@bp.post("/pay/o/<token>/wallet")
@bp.doc(hide=True)
@requires_student
def qr_wallet(token: str) -> Any:
    card = _own_card()
    try:
        service.pay_qr_from_wallet(token, card.number, request.form.get("pin") or None)
    except CampusError as refusal:
        payment = service.find_qr_order(db.session(), token)
        return _checkout_page(payment, "browser", error=str(refusal.detail))
    return redirect(url_for(".qr_checkout", token=token))


# -- web POS and the operator's day ------------------------------------------------


@bp.route("/pos", methods=["GET", "POST"])
@bp.doc(hide=True)
@requires_role(Role.CASHIER)
def web_pos() -> str:
    from campus.auth import current_operator

    operator = current_operator()
    assert operator is not None
    terminals = _terminals_of(operator)
    result, error = None, None
    if request.method == "POST":
        key_id = request.form.get("terminal", "")
        terminal = next((t for t in terminals if t.key_id == key_id), None)
        try:
            if terminal is None:
                raise InvalidInput(gettext("Choose a terminal."))
            if not terminal.enabled or not terminal.merchant.active:
                raise TerminalDisabled()
            amount = parse_fen(request.form.get("amount", ""))
            order_no = request.form.get("order_no") or secrets.token_hex(8)
            code = request.form.get("code", "").strip()
            tap = bool(request.form.get("tap"))
            result = service.pay(
                SignedBy.of(terminal),
                service.PayRequest(
                    order_no=order_no,
                    amount_fen=amount,
                    body_hash=_web_pos_hash(order_no, amount, code, tap=tap),
                    code=code if not tap else None,
                    card_number=code if tap else None,
                    pin=request.form.get("pin") or None,
                ),
            )
        except CampusError as refusal:
            error = str(refusal.detail)
    return render_template(
        "pos/web_pos.html",
        terminals=terminals,
        result=result,
        error=error,
        format_yuan=format_yuan,
        payment_state=payment_state_label,
        channel_names=CHANNEL_NAMES,
    )


CHANNEL_NAMES = {
    "wechat": lazy_gettext("WeChat Pay"),
    "alipay": lazy_gettext("Alipay"),
    "campus": lazy_gettext("Campus card"),
}


def _terminals_of(operator: Any) -> list[Terminal]:
    """The enabled terminals a cashier may charge on: those of the merchants
    they work for (``flask pos assign-cashier``); every one for an admin."""
    query = select(Terminal).where(Terminal.enabled.is_(True)).order_by(Terminal.id)
    if not operator.has_role(Role.ADMIN):
        query = query.where(
            Terminal.merchant_id.in_(
                select(CashierMerchant.merchant_id).where(
                    CashierMerchant.operator_id == operator.id
                )
            )
        )
    return list(db.session.scalars(query))


_PAYMENT_STATES = {
    PaymentState.AWAITING: lazy_gettext("Awaiting the payer"),
    PaymentState.PAYING: lazy_gettext("Paying"),
    PaymentState.SUCCEEDED: lazy_gettext("Paid"),
    PaymentState.FAILED: lazy_gettext("Failed"),
    PaymentState.REVERSED: lazy_gettext("Reversed"),
}
_REFUND_STATES = {
    RefundState.PROCESSING: lazy_gettext("Refund in progress"),
    RefundState.SUCCEEDED: lazy_gettext("Refunded"),
    RefundState.FAILED: lazy_gettext("Refund failed"),
}


def payment_state_label(state: PaymentState) -> str:
    """A payment's state as a cashier reads it."""
    return str(_PAYMENT_STATES.get(state, state.value))


def refund_state_label(state: RefundState) -> str:
    return str(_REFUND_STATES.get(state, state.value))


def _web_pos_hash(order_no: str, amount_fen: int, code: str, *, tap: bool) -> str:
    """What the web POS keeps in ``request_hash``: a keyed digest, as the
    terminal API keeps of its body (``service.request_digest``), so that the
    code (or the tapped card's number) is never stored, nor to be found from
    what is, while a repeated order number with another code is still refused."""
    source = "tap" if tap else "code"
    text = f"web\n{order_no}\n{amount_fen}\n{source}\n{code}"
    return service.request_digest(text.encode())


def payments_of_day(merchant: Merchant, now: dt.datetime) -> list[PosPayment]:
    start, end = business_day_bounds(
        now, current_app.extensions["campus.settings"].zone
    )
    return list(
        db.session.scalars(
            select(PosPayment)
            .where(
                PosPayment.merchant_id == merchant.id,
                PosPayment.created_at >= start,
                PosPayment.created_at < end,
            )
            .order_by(PosPayment.created_at.desc())
        )
    )


@bp.route("/pos/merchants/<code>", methods=["GET", "POST"])
@bp.doc(hide=True)
@requires_role(Role.CASHIER, Role.FINANCE, Role.AUDITOR)
def merchant_day_page(code: str) -> str:
    from campus.auth import current_operator

    merchant = find_merchant(db.session(), code)
    message = None
    if request.method == "POST":
        operator = current_operator()
        assert operator is not None
        try:
            made = refunds.open_refund(
                request.form.get("out_trade_no", ""),
                parse_fen(request.form.get("amount", "")),
                operator=operator,
                destination=RefundDestination(
                    request.form.get("destination", "original")
                ),
                reason=request.form.get("reason") or None,
            )
            message = gettext(
                "Refund %(number)s: %(state)s",
                number=made.out_refund_no,
                state=refund_state_label(made.state),
            )
        except (CampusError, ValueError) as refusal:
            message = str(getattr(refusal, "detail", refusal))
        merchant = find_merchant(db.session(), code)
    payments = payments_of_day(merchant, pos_config().now())
    refund_rows = db.session.scalars(
        select(PosRefund).where(PosRefund.payment_id.in_([p.id for p in payments]))
    ).all()
    by_payment: dict[int, list[PosRefund]] = {}
    for row in refund_rows:
        by_payment.setdefault(row.payment_id, []).append(row)
    return render_template(
        "pos/merchant_day.html",
        merchant=merchant,
        payments=payments,
        refunds=by_payment,
        message=message,
        payment_state=payment_state_label,
        refund_state=refund_state_label,
        static_qr=qr_svg(
            url_for(".static_qr", merchant_code=merchant.code, _external=True)
        ),
        format_yuan=format_yuan,
    )
