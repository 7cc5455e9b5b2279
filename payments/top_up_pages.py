"""The student's card page and the top-up flow, phone first.

Where the page is opened decides how the student pays:

* inside WeChat (``MicroMessenger`` in the user agent): a JSAPI order, after
  WeChat's web OAuth has told us the payer's openid;
* inside Alipay (``AlipayClient``): an in-app order, after Alipay's user
  authorisation has told us the buyer's id;
* another phone browser: WeChat H5 or Alipay WAP, as the student chooses;
* a desktop: a WeChat Native or Alipay precreate QR code to scan with a phone.

The result page shows what the server knows and asks again every two seconds; the
server queries the channel while the order is still paying. A return URL brings the
browser back here and never settles anything by itself.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from typing import Any

import qrcode
import qrcode.image.svg
from apiflask import APIBlueprint, Schema, fields
from apiflask.validators import OneOf
from flask import abort, redirect, render_template, request, session, url_for
from flask_babel import gettext, lazy_gettext
from markupsafe import Markup

from campus.auth import current_student, requires_student
from campus.database import db
from campus.errors import CampusError, Forbidden, InvalidInput
from payments import ledger
from payments.cards import Card, cards_of
from payments.channels import channel_for
from payments.channels.base import PayerContext, PayerKind
from payments.money import format_yuan, parse_fen
from payments.remote_top_up import limits, refresh_top_up, start_top_up
from payments.topups import TopUp, TopUpState, find_top_up

logger = logging.getLogger(__name__)

bp = APIBlueprint("top_up", __name__, tag="Top-up", template_folder="templates")

PRESETS_YUAN = (20, 50, 100, 200)


ENTRY_KIND_LABELS = {
    ledger.EntryKind.TOP_UP: lazy_gettext("Top-up"),
    ledger.EntryKind.PAYMENT: lazy_gettext("Payment"),
    ledger.EntryKind.REFUND: lazy_gettext("Refund"),
    ledger.EntryKind.REVERSAL: lazy_gettext("Reversal"),
    ledger.EntryKind.PURSE_LOAD: lazy_gettext("Loaded onto the chip"),
    ledger.EntryKind.ADJUSTMENT: lazy_gettext("Adjustment"),
    ledger.EntryKind.OPENING: lazy_gettext("Opening balance"),
    ledger.EntryKind.SETTLEMENT: lazy_gettext("Settlement"),
    ledger.EntryKind.FEE: lazy_gettext("Fee"),
}


@bp.app_template_global()
def entry_kind_label(kind: ledger.EntryKind) -> str:
    return str(ENTRY_KIND_LABELS.get(kind, kind.value))


def payer_environment(user_agent: str) -> str:
    """``wechat``, ``alipay``, ``mobile`` or ``desktop``."""
    if "MicroMessenger" in user_agent:
        return "wechat"
    if "AlipayClient" in user_agent:
        return "alipay"
    if any(word in user_agent for word in ("Mobile", "Android", "iPhone", "iPad")):
        return "mobile"
    return "desktop"


def payer_kind(environment: str, channel: str) -> PayerKind:
    if environment == "wechat":
        return PayerKind.JSAPI
    if environment == "alipay":
        return PayerKind.IN_APP
    if environment == "mobile":
        return PayerKind.H5 if channel == "wechat" else PayerKind.WAP
    return PayerKind.NATIVE if channel == "wechat" else PayerKind.PRECREATE


def qr_svg(text: str) -> Markup:
    """A QR code as inline SVG, error correction M."""
    code = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        image_factory=qrcode.image.svg.SvgPathImage,
        box_size=10,
        border=2,
    )
    code.add_data(text)
    buffer = io.BytesIO()
    code.make_image().save(buffer)
    return Markup(buffer.getvalue().decode())  # noqa: S704 - made by qrcode, no input markup


def _own_card(number: str | None = None) -> Card:
    person = current_student()
    assert person is not None
    cards = cards_of(db.session, person)
    if not cards:
        abort(404)
    if number is None:
        return cards[0]
    for card in cards:
        if card.number == number:
            return card
    raise Forbidden(gettext("This is not your card."))


def _own_top_up(out_trade_no: str) -> TopUp:
    top_up = find_top_up(db.session, out_trade_no)
    person = current_student()
    if person is None or top_up.card.person_id != person.id:
        # The same answer as for a number that does not exist: a guessed number
        # tells nothing.
        abort(404)
    return top_up


@bp.get("/card")
@bp.doc(hide=True)
@requires_student
def card_page() -> str:
    card = _own_card(request.args.get("card"))
    environment = payer_environment(request.user_agent.string)
    return render_template(
        "payments/card.html",
        card=card,
        statement=ledger.statement(db.session, card.wallet, 10),
        environment=environment,
        presets=PRESETS_YUAN,
        limits=limits(),
        format_yuan=format_yuan,
        error=request.args.get("error"),
    )


@bp.post("/card/top-up")
@bp.doc(hide=True)
@requires_student
def top_up_form() -> Any:
    card = _own_card(request.form.get("card"))
    environment = payer_environment(request.user_agent.string)
    channel = {"wechat": "wechat", "alipay": "alipay"}.get(
        environment, request.form.get("channel", "")
    )
    try:
        if channel not in {"wechat", "alipay"}:
            raise InvalidInput(gettext("Choose WeChat Pay or Alipay."))
        amount_fen = parse_fen(request.form.get("amount", ""))
    except CampusError as error:
        return redirect(
            url_for(".card_page", card=card.number, error=str(error.detail))
        )
    pending = {"card": card.number, "amount_fen": amount_fen, "channel": channel}
    kind = payer_kind(environment, channel)
    if kind is PayerKind.JSAPI and not session.get("wechat_openid"):
        return _authorise("wechat", pending)
    if kind is PayerKind.IN_APP and not session.get("alipay_buyer_id"):
        return _authorise("alipay", pending)
    return _start(pending, kind)


def _authorise(channel: str, pending: dict[str, Any]) -> Any:
    state = secrets.token_urlsafe(16)
    session["oauth_state"] = state
    session["pending_top_up"] = pending
    back = url_for(".oauth_return", channel=channel, _external=True)
    adapter: Any = channel_for(channel)
    if channel == "wechat":
        return redirect(adapter.authorize_url(back, state))
    return redirect(adapter.authorization_url(back, state))


@bp.get("/card/top-up/oauth/<channel>")
@bp.doc(hide=True)
@requires_student
def oauth_return(channel: str) -> Any:
    pending = session.pop("pending_top_up", None)
    if (
        channel not in {"wechat", "alipay"}
        or pending is None
        or request.args.get("state") != session.pop("oauth_state", None)
    ):
        raise Forbidden(gettext("The authorisation did not come from this page."))
    adapter: Any = channel_for(channel)
    try:
        if channel == "wechat":
            session["wechat_openid"] = adapter.openid_for_code(request.args["code"])
            kind = PayerKind.JSAPI
        else:
            session["alipay_buyer_id"] = adapter.buyer_id(request.args["auth_code"])
            kind = PayerKind.IN_APP
    except KeyError:
        raise InvalidInput(gettext("The authorisation was cancelled.")) from None
    return _start(pending, kind)


def _start(pending: dict[str, Any], kind: PayerKind) -> Any:
    payer = PayerContext(
        kind=kind,
        openid=session.get("wechat_openid"),
        buyer_id=session.get("alipay_buyer_id"),
        client_ip=request.remote_addr or "127.0.0.1",
        # The order number exists only once the order is opened, so the channel
        # sends the browser to a fixed page that finds the latest top-up.
        return_url=url_for(".returned", _external=True),
    )
    try:
        top_up, checkout = start_top_up(
            pending["card"], pending["amount_fen"], pending["channel"], payer
        )
    except CampusError as error:
        return redirect(
            url_for(".card_page", card=pending["card"], error=str(error.detail))
        )
    session["last_top_up"] = top_up.out_trade_no
    if checkout.redirect_url:
        return redirect(checkout.redirect_url)
    return redirect(url_for(".result_page", out_trade_no=top_up.out_trade_no))


@bp.get("/card/top-up/returned")
@bp.doc(hide=True)
@requires_student
def returned() -> Any:
    number = session.get("last_top_up")
    if not number:
        return redirect(url_for(".card_page"))
    return redirect(url_for(".result_page", out_trade_no=number))


@bp.get("/card/top-ups/<out_trade_no>")
@bp.doc(hide=True)
@requires_student
def result_page(out_trade_no: str) -> str:
    top_up = _own_top_up(out_trade_no)
    checkout = json.loads(top_up.checkout) if top_up.checkout else {}
    qr = None
    if top_up.state is TopUpState.PAYING and checkout.get("qr_content"):
        qr = qr_svg(checkout["qr_content"])
    return render_template(
        "payments/top_up_result.html",
        top_up=top_up,
        checkout=checkout,
        qr=qr,
        format_yuan=format_yuan,
        sandbox_cashier=_sandbox_cashier(top_up, checkout),
    )


def _sandbox_cashier(top_up: TopUp, checkout: dict[str, Any]) -> str | None:
    """In the sandbox, where the in-app payment sheet would open: the JSAPI and
    in-app bridges exist only inside the real apps."""
    from flask import current_app

    if "campus.sandbox" not in current_app.extensions:
        return None
    params = checkout.get("jsapi_params") or {}
    if top_up.payer_kind == PayerKind.JSAPI and params:
        from urllib.parse import urlencode

        back = url_for(".result_page", out_trade_no=top_up.out_trade_no, _external=True)
        return "/sandbox/pay/wechat/jsapi?" + urlencode(
            {**params, "redirect_url": back}
        )
    if top_up.payer_kind == PayerKind.IN_APP and params.get("tradeNO"):
        return f"/sandbox/alipay/cashier?tradeNO={params['tradeNO']}"
    return None


# -- JSON API --------------------------------------------------------------------


class TopUpIn(Schema):
    amount = fields.String(
        required=True,
        metadata={"description": "yuan, e.g. 50 or 12.50", "example": "50"},
    )
    channel = fields.String(required=True, validate=OneOf(["wechat", "alipay"]))
    payer_kind = fields.String(
        load_default="native",
        validate=OneOf(["native", "h5", "precreate", "wap"]),
        metadata={
            "description": "how the payer pays; in-app kinds go through the "
            "pages, which run the channels' authorisation first"
        },
    )
    card = fields.String(load_default=None)


class TopUpOut(Schema):
    out_trade_no = fields.String()
    card = fields.String()
    channel = fields.String()
    amount_fen = fields.Integer()
    state = fields.String(metadata={"enum": [state.value for state in TopUpState]})
    created_at = fields.DateTime()
    paid_at = fields.DateTime(allow_none=True)
    balance_fen = fields.Integer(metadata={"description": "the card's balance now"})
    qr_content = fields.String(allow_none=True)
    redirect_url = fields.String(allow_none=True)


def top_up_out(top_up: TopUp) -> dict[str, Any]:
    checkout = json.loads(top_up.checkout) if top_up.checkout else {}
    return {
        "out_trade_no": top_up.out_trade_no,
        "card": top_up.card.number,
        "channel": top_up.channel,
        "amount_fen": top_up.amount_fen,
        "state": top_up.state.value,
        "created_at": top_up.created_at,
        "paid_at": top_up.paid_at,
        "balance_fen": top_up.card.wallet.balance_fen,
        "qr_content": checkout.get("qr_content"),
        "redirect_url": checkout.get("redirect_url"),
    }


@bp.post("/api/top-ups")
@bp.input(TopUpIn, arg_name="order")
@bp.output(TopUpOut, status_code=201)
@bp.doc(
    summary="Start a top-up of the signed-in student's card",
    responses=[400, 401, 409, 502, 503],
)
@requires_student
def create_top_up_api(order: dict[str, Any]) -> dict[str, Any]:
    card = _own_card(order["card"])
    payer = PayerContext(
        kind=PayerKind(order["payer_kind"]),
        client_ip=request.remote_addr or "127.0.0.1",
        return_url=url_for(".returned", _external=True),
    )
    channel_kinds = {"wechat": {"native", "h5"}, "alipay": {"precreate", "wap"}}
    if order["payer_kind"] not in channel_kinds[order["channel"]]:
        raise InvalidInput(gettext("This channel does not offer that way to pay."))
    top_up, _ = start_top_up(
        card.number, parse_fen(order["amount"]), order["channel"], payer
    )
    return top_up_out(find_top_up(db.session, top_up.out_trade_no))


@bp.get("/api/top-ups/<out_trade_no>")
@bp.output(TopUpOut)
@bp.doc(
    summary="A top-up's state (asks the channel while it is still paying)",
    responses=[401, 404],
)
@requires_student
def get_top_up_api(out_trade_no: str) -> dict[str, Any]:
    _own_top_up(out_trade_no)
    return top_up_out(refresh_top_up(out_trade_no))
