"""The sandbox's own pages and control API, served at ``/`` beside the gateways.

For people (phone-size, Chinese first, English second): the demo payers and their
current payment codes with balances and the "password needed" switch, the open
orders, and the payer page where a demo payer confirms or cancels an order (the
JSAPI, H5 and Native flows of the WeChat gateway land here; another gateway may
link to its own).

For tests and scripts (JSON): fault switches, the sandbox clock, the outbox, and a
gateway's own settings (``/api/gateways/<name>/settings``).

The pages have no sign-in and no CSRF protection: the sandbox is for a developer's
machine or a test run, and production mode refuses to enable it.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import qrcode
import qrcode.image.svg
from flask import Flask, abort, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from sandbox.core import Sandbox

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"


def qr_svg(text: str) -> str:
    """An inline SVG QR code of ``text``."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


def yuan(fen: int) -> str:
    whole, part = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole}.{part:02d}"


def start_delivery_thread(sandbox: Sandbox, interval: float = 1.0) -> threading.Event:
    """Deliver due notifications every ``interval`` seconds in a daemon thread, for
    a served sandbox. Set the returned event to stop it."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                sandbox.outbox.deliver_due()
            except Exception:
                # One bad delivery must not end notifications for the whole run.
                logger.exception("sandbox_delivery_failed")

    threading.Thread(target=run, name="sandbox-outbox", daemon=True).start()
    return stop


def create_control_app(sandbox: Sandbox) -> Flask:
    app = Flask(__name__, template_folder=str(TEMPLATES))
    app.jinja_env.filters["yuan"] = yuan

    def wechat() -> Any:
        gateway = sandbox.gateways.get("wechat")
        if gateway is None:
            abort(404)
        return gateway

    # -- pages ----------------------------------------------------------------

    @app.get("/")
    def index() -> str:
        gateway = sandbox.gateways.get("wechat")
        return render_template(
            "sandbox_index.html",
            gateways=sorted(sandbox.gateways),
            payers=_payers(sandbox),
            orders=gateway.open_orders() if gateway is not None else [],  # type: ignore[attr-defined]
            now=sandbox.clock.now(),
            switches=sandbox.faults.snapshot(),
            fault_names={
                name: getattr(g, "fault_names", {})
                for name, g in sorted(sandbox.gateways.items())
            },
            pending=len(sandbox.outbox.pending()),
        )

    @app.post("/faults")
    def fault_form() -> Response:
        """The home page's fault form: set a switch, or clear a gateway's."""
        form = request.form
        channel = form.get("channel", "")
        if channel in sandbox.gateways:
            if form.get("action") == "clear":
                sandbox.faults.clear(channel)
            elif form.get("name"):
                sandbox.faults.set(
                    channel,
                    form["name"],
                    _form_value(form.get("value", "")),
                    form.get("order") or "*",
                )
        return redirect(url_for("index"))

    @app.post("/clock")
    def clock_form() -> Response:
        if request.form.get("action") == "reset":
            sandbox.clock.reset()
        else:
            sandbox.clock.advance(float(request.form.get("seconds") or 0))
        sandbox.outbox.deliver_due()
        return redirect(url_for("index"))

    @app.get("/payer/<payer_id>")
    def payer(payer_id: str) -> str:
        codes = []
        for name, gateway in sorted(sandbox.gateways.items()):
            known = {p["id"]: p for p in gateway.payers()}
            if payer_id not in known:
                continue
            code = gateway.current_code(payer_id)
            codes.append(
                {
                    "gateway": name,
                    "code": code,
                    "qr": qr_svg(code),
                    "payer": known[payer_id],
                    "switch": hasattr(gateway, "set_password_needed"),
                }
            )
        if not codes:
            abort(404)
        return render_template("sandbox_payer.html", payer_id=payer_id, codes=codes)

    @app.post("/payer/<payer_id>/password")
    def password(payer_id: str) -> Response:
        gateway = sandbox.gateways.get(request.form.get("gateway", ""))
        if gateway is None or not hasattr(gateway, "set_password_needed"):
            abort(404)
        gateway.set_password_needed(payer_id, int(request.form.get("seconds") or 0))
        return redirect(url_for("payer", payer_id=payer_id))

    @app.get("/pay/wechat/<prepay_id>")
    def wechat_cashier(prepay_id: str) -> str:
        order = wechat().order_view(prepay_id=prepay_id)
        if order is None:
            abort(404)
        return render_template(
            "sandbox_wechat_pay.html",
            order=order,
            payers=wechat().payers(),
            redirect_url=request.args.get("redirect_url", ""),
            message=None,
        )

    @app.post("/pay/wechat/<prepay_id>")
    def wechat_pay(prepay_id: str) -> Any:
        from sandbox.wechat.gateway import PayerError

        gateway = wechat()
        redirect_url = request.form.get("redirect_url", "")
        try:
            if request.form.get("action") == "cancel":
                order = gateway.cancel(prepay_id)
            else:
                order = gateway.confirm(prepay_id, request.form.get("payer", ""))
        except PayerError as error:
            order = gateway.order_view(prepay_id=prepay_id)
            if order is None:
                abort(404)
            return render_template(
                "sandbox_wechat_pay.html",
                order=order,
                payers=gateway.payers(),
                redirect_url=redirect_url,
                message=str(error),
            ), 409
        if redirect_url and urlsplit(redirect_url).scheme in {"http", "https"}:
            return redirect(redirect_url)
        return render_template(
            "sandbox_wechat_pay.html",
            order=order,
            payers=gateway.payers(),
            redirect_url="",
            message=None,
        )

    @app.get("/pay/wechat/jsapi")
    def wechat_jsapi() -> Any:
        """What ``WeixinJSBridge.invoke('getBrandWCPayRequest', params)`` does in
        the app: check the page's paySign, then open the cashier."""
        from sandbox.wechat.gateway import PayerError

        try:
            prepay_id = wechat().jsapi_order(request.args.to_dict())
        except (PayerError, KeyError) as error:
            return render_template("wechat_oauth_error.html", message=str(error)), 400
        return redirect(
            url_for(
                "wechat_cashier",
                prepay_id=prepay_id,
                redirect_url=request.args.get("redirect_url", ""),
            )
        )

    @app.post("/scan")
    def scan() -> Any:
        """Scanning a Native ``code_url`` (``weixin://wxpay/bizpayurl?pr=…``)."""
        text = request.form.get("code_url", "").strip()
        prepay = parse_qs(urlsplit(text).query).get("pr", [text])[0]
        return redirect(url_for("wechat_cashier", prepay_id=prepay))

    # -- JSON control API -------------------------------------------------------

    @app.get("/api/faults")
    def faults() -> Any:
        names = {
            name: getattr(gateway, "fault_names", {})
            for name, gateway in sandbox.gateways.items()
        }
        return jsonify(switches=sandbox.faults.snapshot(), names=names)

    @app.post("/api/faults")
    def set_fault() -> Any:
        body = _json()
        channel = str(body.get("channel", ""))
        if channel not in sandbox.gateways or not body.get("name"):
            return jsonify(error="channel and name required"), 400
        sandbox.faults.set(
            channel,
            str(body["name"]),
            body.get("value"),
            str(body.get("order") or "*"),
        )
        return jsonify(switches=sandbox.faults.snapshot())

    @app.delete("/api/faults")
    def clear_faults() -> Any:
        sandbox.faults.clear(request.args.get("channel") or None)
        return jsonify(switches=sandbox.faults.snapshot())

    @app.get("/api/clock")
    def clock() -> Any:
        return jsonify(now=sandbox.clock.now().isoformat())

    @app.post("/api/clock/advance")
    def advance() -> Any:
        return jsonify(
            now=sandbox.clock.advance(float(_json().get("seconds", 0))).isoformat()
        )

    @app.post("/api/clock/set")
    def set_clock() -> Any:
        try:
            moment = dt.datetime.fromisoformat(str(_json().get("at", "")))
            sandbox.clock.set(moment)
        except ValueError as error:
            return jsonify(error=str(error)), 400
        return jsonify(now=sandbox.clock.now().isoformat())

    @app.post("/api/clock/reset")
    def reset_clock() -> Any:
        sandbox.clock.reset()
        return jsonify(now=sandbox.clock.now().isoformat())

    @app.get("/api/outbox")
    def outbox() -> Any:
        return jsonify(
            pending=[
                {
                    "id": d.id,
                    "channel": d.channel,
                    "order": d.out_trade_no,
                    "due_at": d.due_at.isoformat(),
                    "attempts": d.attempts,
                }
                for d in sandbox.outbox.pending()
            ]
        )

    @app.post("/api/outbox/deliver")
    def deliver() -> Any:
        return jsonify(accepted=sandbox.outbox.deliver_due())

    @app.route("/api/gateways/<name>/settings", methods=["GET", "POST"])
    def gateway_settings(name: str) -> Any:
        gateway: Any = sandbox.gateways.get(name)
        if gateway is None or not hasattr(gateway, "settings"):
            abort(404)
        if request.method == "POST":
            try:
                gateway.configure(**_json())
            except (TypeError, ValueError) as error:
                return jsonify(error=str(error)), 400
        return jsonify(gateway.settings())

    @app.post("/api/payers/<payer_id>/password")
    def api_password(payer_id: str) -> Any:
        body = _json()
        gateway = sandbox.gateways.get(str(body.get("channel", "")))
        if gateway is None or not hasattr(gateway, "set_password_needed"):
            return jsonify(error="unknown channel"), 400
        try:
            gateway.set_password_needed(payer_id, int(body.get("seconds", 0)))
        except KeyError:
            return jsonify(error="unknown payer"), 404
        return jsonify(payer=payer_id, seconds=int(body.get("seconds", 0)))

    @app.get("/api/payers/<payer_id>/codes")
    def api_codes(payer_id: str) -> Any:
        codes = {}
        for name, gateway in sandbox.gateways.items():
            try:
                codes[name] = gateway.current_code(payer_id)
            except KeyError:
                continue
        return jsonify(codes)

    return app


def _form_value(text: str) -> Any:
    """A number where the form holds one, ``True`` for an empty box (a switch
    that only needs to be on), the text otherwise."""
    text = text.strip()
    if not text:
        return True
    try:
        return int(text)
    except ValueError:
        return text


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _payers(sandbox: Sandbox) -> list[dict[str, Any]]:
    """Each demo payer once, with their balance in every gateway."""
    merged: dict[str, dict[str, Any]] = {}
    for name, gateway in sorted(sandbox.gateways.items()):
        for payer in gateway.payers():
            entry = merged.setdefault(
                payer["id"],
                {
                    "id": payer["id"],
                    "name": payer.get("name", payer["id"]),
                    "name_en": payer.get("name_en", ""),
                    "balances": {},
                },
            )
            entry["balances"][name] = payer.get("balance_fen", 0)
    return list(merged.values())
