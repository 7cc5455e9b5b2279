"""The sandbox WeChat Pay API v3 gateway: a Flask app that answers as
``api.mch.weixin.qq.com`` does, for one merchant, with demo payers behind it.

Served by ``Sandbox.wsgi()`` at ``/wechat``, it sees request paths exactly as the
real API does (``/v3/pay/transactions/native``), so the SDK signs and we verify the
same string. Every ``/v3/`` request is authenticated (``protocol``); every answer
but a bill download is signed with the platform key of the mode the merchant uses
(platform public key, or the active platform certificate); payment and refund
notifications go out through the sandbox outbox on WeChat Pay's retry schedule.

States change lazily: a code payment waiting for the password becomes paid, and a
refund succeeds, when the sandbox clock has passed their moment and someone looks.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, make_response, redirect, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sandbox import DEMO_PAYERS
from sandbox.core import Gateway, Sandbox
from sandbox.wechat import bill, protocol
from sandbox.wechat.keys import WechatKeys
from sandbox.wechat.notify import Notifier, rfc3339
from sandbox.wechat.store import (
    TRADE_STATE_DESC,
    OAuthCode,
    Order,
    Payer,
    PaymentCode,
    Refund,
    TradeState,
    open_store,
)

logger = logging.getLogger(__name__)

CHANNEL = "wechat"
ZONE = ZoneInfo("Asia/Shanghai")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

CODE_LIFETIME_SECONDS = 60
"""A payment code refreshes every minute in the WeChat app."""
OAUTH_CODE_SECONDS = 300
BILL_URL_SECONDS = 300
DEFAULT_ORDER_SECONDS = 2 * 3600
PAYMENT_CODE = re.compile(r"1[0-5]\d{16}")
PAID = (TradeState.SUCCESS, TradeState.REFUND)

FAULT_NAMES = {
    "latency_ms": "carry out API calls, then answer this many milliseconds late",
    "no_answer": "hold API calls this many seconds without answering",
    "http_status": "answer API calls with this 5xx status from a proxy",
    "system_error": "answer API calls 500 SYSTEM_ERROR (any true value)",
    "user_paying_seconds": "code payments answer USERPAYING for this many seconds",
    "notification": "drop | duplicate | delay | reorder | bad_signature | amount",
    "notification_delay_seconds": "how late notification=delay sends (default 60)",
    "notification_amount_delta_fen": "what notification=amount adds (default 1)",
    "bill": "missing_line | changed_amount | after_midnight",
    "bill_download": "corrupt | truncate",
}


class ApiError(Exception):
    """An answer in the real error shape: ``{"code": …, "message": …}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class PayerError(Exception):
    """What the payer page tells a demo payer who cannot pay."""


class WechatGateway(Gateway):
    name = CHANNEL
    fault_names = FAULT_NAMES

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.clock = sandbox.clock
        self.faults = sandbox.faults
        self.outbox = sandbox.outbox
        folder = Path(sandbox.instance_path) / "sandbox"
        self.keys = WechatKeys.load_or_create(folder / "wechat")
        self.engine = open_store(str(folder / "wechat.sqlite3"))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # One lock for every change: the sandbox is for one person or one test
        # run, and a serial history is easier to reason about than row locks.
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._bills: dict[str, tuple[bytes, bool, dt.datetime]] = {}
        self.platform_mode = "public_key"
        """``public_key`` or ``certificate``: how answers and notifications are
        signed when the request does not name a key itself."""
        self.signing_serial = self.keys.platform_certificates[-1].serial
        """The platform certificate that signs in certificate mode."""
        self.refund_seconds = 5
        """How long a refund stays PROCESSING."""
        self.certificate_downloads = 0
        """How often ``/v3/certificates`` was asked, for tests of clients."""
        self.notifier = Notifier(
            apiv3_key=self.keys.apiv3_key,
            clock=self.clock,
            faults=self.faults,
            outbox=self.outbox,
            signer=self._mode_signer,
            lock=self._lock,
        )
        self._seed_payers()
        self.app = self._make_app()

    # -- settings -------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {
            "platform_mode": self.platform_mode,
            "signing_serial": self.signing_serial,
            "platform_serials": [p.serial for p in self.keys.platform_certificates],
            "public_key_id": self.keys.public_key_id,
            "refund_seconds": self.refund_seconds,
            "mchid": self.keys.mchid,
            "appid": self.keys.appid,
        }

    def configure(
        self,
        *,
        platform_mode: str | None = None,
        signing_serial: str | None = None,
        refund_seconds: int | None = None,
    ) -> None:
        if platform_mode is not None:
            if platform_mode not in {"public_key", "certificate"}:
                raise ValueError("platform_mode is public_key or certificate")
            self.platform_mode = platform_mode
        if signing_serial is not None:
            if self.keys.platform(signing_serial) is None:
                raise ValueError("no platform certificate with that serial")
            self.signing_serial = signing_serial.upper()
        if refund_seconds is not None:
            self.refund_seconds = int(refund_seconds)
        logger.info("sandbox_wechat_configured", extra=self.settings())

    def close(self) -> None:
        """Let go of calls held by the ``no_answer`` fault."""
        self._release.set()

    # -- payers ---------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._lock, self._sessions() as session, session.begin():
            yield session

    def _seed_payers(self) -> None:
        with self._session() as session:
            for demo in DEMO_PAYERS:
                if session.get(Payer, demo.id) is None:
                    session.add(
                        Payer(
                            id=demo.id,
                            name=demo.name,
                            name_en=demo.name_en,
                            balance_fen=demo.balance_fen,
                        )
                    )

    def reset_payers(self) -> None:
        """Every demo payer back to their starting balance, no password switch."""
        with self._session() as session:
            for demo in DEMO_PAYERS:
                payer = session.get(Payer, demo.id)
                if payer is not None:
                    payer.balance_fen = demo.balance_fen
                    payer.password_seconds = 0

    def openid(self, payer_id: str) -> str:
        """The payer's openid under our appid: stable, and meaningless elsewhere."""
        digest = hashlib.sha256(f"{self.keys.appid}:{payer_id}".encode()).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode()[:27]

    def _payer_by_openid(self, session: Session, openid: str) -> Payer | None:
        for payer in session.scalars(select(Payer)):
            if self.openid(payer.id) == openid:
                return payer
        return None

    def payers(self) -> list[dict[str, Any]]:
        with self._session() as session:
            return [
                {
                    "id": payer.id,
                    "name": payer.name,
                    "name_en": payer.name_en,
                    "balance_fen": payer.balance_fen,
                    "password_seconds": payer.password_seconds,
                    "openid": self.openid(payer.id),
                }
                for payer in session.scalars(select(Payer).order_by(Payer.id))
            ]

    def set_password_needed(self, payer_id: str, seconds: int) -> None:
        """The payer's next code payment waits ``seconds`` (sandbox clock) for the
        password, answering USERPAYING meanwhile; 0 turns the switch off."""
        with self._session() as session:
            payer = session.get(Payer, payer_id)
            if payer is None:
                raise KeyError(payer_id)
            payer.password_seconds = max(0, int(seconds))

    def current_code(self, payer_id: str) -> str:
        now = self.clock.now()
        with self._session() as session:
            if session.get(Payer, payer_id) is None:
                raise KeyError(payer_id)
            fresh = session.scalar(
                select(PaymentCode)
                .where(
                    PaymentCode.payer_id == payer_id,
                    PaymentCode.used_at.is_(None),
                    PaymentCode.issued_at
                    > now - dt.timedelta(seconds=CODE_LIFETIME_SECONDS),
                )
                .order_by(PaymentCode.issued_at.desc())
            )
            if fresh is not None:
                return fresh.code
            while True:
                code = secrets.choice(["10", "11", "12", "13", "14", "15"]) + "".join(
                    secrets.choice("0123456789") for _ in range(16)
                )
                if session.get(PaymentCode, code) is None:
                    break
            session.add(PaymentCode(code=code, payer_id=payer_id, issued_at=now))
            return code

    # -- payer pages ----------------------------------------------------------

    def open_orders(self) -> list[dict[str, Any]]:
        with self._session() as session:
            orders = session.scalars(
                select(Order)
                .where(Order.state.in_([TradeState.NOTPAY, TradeState.USERPAYING]))
                .order_by(Order.created_at.desc())
            ).all()
            views = []
            for order in orders:
                self._advance(session, order)
                if order.state in (TradeState.NOTPAY, TradeState.USERPAYING):
                    views.append(self._order_view(order))
            return views

    def order_view(
        self, *, prepay_id: str | None = None, out_trade_no: str | None = None
    ) -> dict[str, Any] | None:
        with self._session() as session:
            order = self._find(session, prepay_id=prepay_id, out_trade_no=out_trade_no)
            if order is None:
                return None
            self._advance(session, order)
            return self._order_view(order)

    def _order_view(self, order: Order) -> dict[str, Any]:
        return {
            "out_trade_no": order.out_trade_no,
            "prepay_id": order.prepay_id,
            "trade_type": order.trade_type,
            "description": order.description,
            "total_fen": order.total_fen,
            "state": order.state,
            "state_desc": TRADE_STATE_DESC[TradeState(order.state)],
            "payer_id": order.payer_id,
            "expired": order.expires_at <= self.clock.now(),
        }

    def _find(
        self,
        session: Session,
        *,
        prepay_id: str | None = None,
        out_trade_no: str | None = None,
    ) -> Order | None:
        if out_trade_no:
            return session.get(Order, out_trade_no)
        if prepay_id:
            return session.scalar(select(Order).where(Order.prepay_id == prepay_id))
        return None

    def jsapi_order(self, params: dict[str, str]) -> str:
        """Check the parameters a page hands ``getBrandWCPayRequest`` as the
        WeChat client does (``paySign`` by the merchant's key over appId,
        timeStamp, nonceStr, package) and name the order's prepay id."""
        message = "".join(
            params.get(name, "") + "\n"
            for name in ("appId", "timeStamp", "nonceStr", "package")
        )
        public_key = self.keys.merchant_certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        if params.get("appId") != self.keys.appid:
            raise PayerError("appId 不正确 / wrong appId")
        if params.get("signType") != "RSA" or not protocol.rsa_verify(
            public_key, message, params.get("paySign", "")
        ):
            raise PayerError("支付验证签名失败 / the payment signature does not verify")
        return params["package"].removeprefix("prepay_id=")

    def confirm(self, prepay_id: str, payer_id: str) -> dict[str, Any]:
        """A demo payer pays an order on the payer page."""
        now = self.clock.now()
        with self._session() as session:
            order = self._find(session, prepay_id=prepay_id)
            payer = session.get(Payer, payer_id)
            if order is None or payer is None:
                raise PayerError("订单不存在 / no such order")
            self._advance(session, order)
            if order.payer_id and order.payer_id != payer_id:
                raise PayerError("这不是你的订单 / this order belongs to another payer")
            if order.state == TradeState.USERPAYING:
                self._pay(session, order, payer, now)
                return self._order_view(order)
            if order.state != TradeState.NOTPAY:
                raise PayerError(
                    f"订单状态不可支付 / cannot pay an order in state {order.state}"
                )
            if order.expires_at <= now:
                raise PayerError("订单已过期 / the order has expired")
            if payer.balance_fen < order.total_fen:
                raise PayerError("零钱余额不足 / not enough balance")
            self._pay(session, order, payer, now)
            self._notify_payment(order)
            return self._order_view(order)

    def cancel(self, prepay_id: str) -> dict[str, Any]:
        """The payer closes the cashier: an unpaid order simply stays unpaid, a
        code payment waiting for the password fails."""
        with self._session() as session:
            order = self._find(session, prepay_id=prepay_id)
            if order is None:
                raise PayerError("订单不存在 / no such order")
            if order.state == TradeState.USERPAYING:
                order.state = TradeState.PAYERROR
            return self._order_view(order)

    # -- state ----------------------------------------------------------------

    def _pay(
        self, session: Session, order: Order, payer: Payer, moment: dt.datetime
    ) -> None:
        payer.balance_fen -= order.total_fen
        order.state = TradeState.SUCCESS
        order.payer_id = payer.id
        order.openid = self.openid(payer.id)
        order.success_at = moment
        order.was_paid = True
        order.transaction_id = (
            "4200"
            + secrets.choice("123456789")
            + "".join(secrets.choice("0123456789") for _ in range(5))
            + moment.astimezone(ZONE).strftime("%Y%m%d")
            + "".join(secrets.choice("0123456789") for _ in range(10))
        )
        logger.info(
            "sandbox_wechat_paid",
            extra={"out_trade_no": order.out_trade_no, "payer": payer.id},
        )

    def _advance(self, session: Session, order: Order) -> None:
        """Apply what the sandbox clock says has happened since last look."""
        now = self.clock.now()
        if (
            order.state == TradeState.USERPAYING
            and order.password_until is not None
            and order.password_until <= now
        ):
            payer = session.get(Payer, order.payer_id)
            assert payer is not None
            if payer.balance_fen >= order.total_fen:
                self._pay(session, order, payer, order.password_until)
            else:
                order.state = TradeState.PAYERROR
        refunds = session.scalars(
            select(Refund).where(
                Refund.out_trade_no == order.out_trade_no,
                Refund.status == "PROCESSING",
                Refund.success_due <= now,
            )
        ).all()
        for refund in refunds:
            refund.status = "SUCCESS"
            payer = session.get(Payer, order.payer_id)
            if payer is not None:
                payer.balance_fen += refund.amount_fen
            if order.state == TradeState.SUCCESS:
                order.state = TradeState.REFUND

    # -- HTTP -----------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask(__name__, template_folder=str(TEMPLATES))
        app.before_request(self._gate)
        app.after_request(self._late)
        app.register_error_handler(ApiError, self._error)
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", "/v3/certificates", self._certificates),
            ("POST", "/v3/pay/transactions/<kind>", self._create),
            ("GET", "/v3/pay/transactions/out-trade-no/<out_trade_no>", self._query),
            ("GET", "/v3/pay/transactions/id/<transaction_id>", self._query_by_id),
            (
                "POST",
                "/v3/pay/transactions/out-trade-no/<out_trade_no>/close",
                self._close,
            ),
            (
                "POST",
                "/v3/pay/transactions/out-trade-no/<out_trade_no>/reverse",
                self._reverse,
            ),
            ("POST", "/v3/refund/domestic/refunds", self._refund),
            ("GET", "/v3/refund/domestic/refunds/<out_refund_no>", self._query_refund),
            ("GET", "/v3/bill/tradebill", self._trade_bill),
            ("GET", "/v3/billdownload/file", self._download),
            ("GET", "/connect/oauth2/authorize", self._authorize),
            ("POST", "/connect/oauth2/authorize", self._authorize),
            ("GET", "/sns/oauth2/access_token", self._access_token),
        ]
        for method, rule, view in routes:
            app.add_url_rule(
                rule, view.__name__.strip("_") + method, view, methods=[method]
            )

        @app.errorhandler(404)
        def not_found(error: Exception) -> Response:
            return self._answer(
                404, {"code": "NOT_FOUND", "message": "请求的资源不存在"}
            )

        @app.errorhandler(405)
        def wrong_method(error: Exception) -> Response:
            return self._answer(
                405, {"code": "INVALID_REQUEST", "message": "HTTP请求方法不正确"}
            )

        return app

    def _order_hint(self) -> str | None:
        parts = request.path.split("/")
        if "out-trade-no" in parts:
            index = parts.index("out-trade-no") + 1
            return parts[index] if index < len(parts) else None
        if request.method == "POST" and request.is_json:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                value = body.get("out_trade_no")
                return value if isinstance(value, str) else None
        return None

    def _gate(self) -> Response | None:
        if not request.path.startswith("/v3/"):
            return None
        order = self._order_hint()
        hold = self.faults.get(CHANNEL, "no_answer", order)
        if hold:
            # The caller gives up first; what we answer afterwards nobody reads.
            self._release.wait(float(hold))
            return Response(status=504)
        status = self.faults.get(CHANNEL, "http_status", order)
        if status:
            return Response(
                f"<html><body><h1>{int(status)}</h1>upstream error</body></html>",
                status=int(status),
                content_type="text/html",
            )
        self._authenticate()
        if self.faults.get(CHANNEL, "system_error", order):
            raise ApiError(500, "SYSTEM_ERROR", "系统错误")
        return None

    def _late(self, response: Response) -> Response:
        # The call has been carried out; only its answer is late, which is what
        # makes a timeout's outcome unknown rather than failed.
        if request.path.startswith("/v3/"):
            latency = self.faults.get(CHANNEL, "latency_ms", self._order_hint())
            if latency:
                time.sleep(float(latency) / 1000)
        return response

    def _authenticate(self) -> None:
        try:
            auth = protocol.parse_authorization(request.headers.get("Authorization"))
        except protocol.AuthorizationError as error:
            raise ApiError(401, "SIGN_ERROR", str(error)) from error
        if auth.mchid != self.keys.mchid:
            raise ApiError(401, "SIGN_ERROR", "商户号与证书不匹配")
        if auth.serial_no.upper() != self.keys.merchant_serial:
            raise ApiError(401, "SIGN_ERROR", "商户证书序列号有误。")
        try:
            stamp = int(auth.timestamp)
        except ValueError:
            raise ApiError(
                401, "SIGN_ERROR", "Http头Authorization中的timestamp格式错误"
            ) from None
        # The SDK stamps requests with the real clock, which tests cannot move, so
        # freshness is judged by the real clock too, not the sandbox's.
        if abs(time.time() - stamp) > protocol.MAX_SKEW_SECONDS:
            raise ApiError(
                401,
                "SIGN_ERROR",
                "Http头Authorization中的timestamp与发起请求的时间不得超过5分钟",
            )
        path = request.path
        if request.query_string:
            path += "?" + request.query_string.decode()
        message = protocol.request_message(
            request.method,
            path,
            auth.timestamp,
            auth.nonce_str,
            request.get_data(as_text=True),
        )
        public_key = self.keys.merchant_certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        if not protocol.rsa_verify(public_key, message, auth.signature):
            logger.info("sandbox_wechat_bad_signature", extra={"path": request.path})
            raise ApiError(401, "SIGN_ERROR", "错误的签名，导致验签失败")

    def _signer(self) -> tuple[rsa.RSAPrivateKey, str]:
        named = request.headers.get("Wechatpay-Serial", "")
        if named == self.keys.public_key_id or (
            not named and self.platform_mode == "public_key"
        ):
            return self.keys.public_key_private, self.keys.public_key_id
        return self._platform_signer()

    def _platform_signer(self) -> tuple[rsa.RSAPrivateKey, str]:
        platform = self.keys.platform(self.signing_serial)
        assert platform is not None
        return platform.private_key, platform.serial

    def _mode_signer(self) -> tuple[rsa.RSAPrivateKey, str]:
        if self.platform_mode == "public_key":
            return self.keys.public_key_private, self.keys.public_key_id
        return self._platform_signer()

    def _answer(self, status: int, payload: dict[str, Any] | None) -> Response:
        body = (
            ""
            if payload is None
            else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        )
        key, serial = self._signer()
        response = Response(body, status=status)
        if payload is None:
            response.headers.remove("Content-Type")
        else:
            response.content_type = "application/json; charset=utf-8"
        response.headers.update(
            protocol.signed_headers(key, serial, body, int(time.time()))
        )
        response.headers["Request-ID"] = uuid.uuid4().hex
        return response

    def _error(self, error: ApiError) -> Response:
        return self._answer(
            error.status, {"code": error.code, "message": error.message}
        )

    def _body(self) -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "PARAM_ERROR", "请求体不是合法的JSON")
        return body

    @staticmethod
    def _field(body: dict[str, Any], *path: str, kind: type = str) -> Any:
        value: Any = body
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise ApiError(
                400,
                "PARAM_ERROR",
                f"输入源“/body/{'/'.join(path)}”映射到字段缺失或格式错误",
            )
        return value

    def _check_merchant(self, body: dict[str, Any]) -> None:
        if self._field(body, "mchid") != self.keys.mchid:
            raise ApiError(400, "PARAM_ERROR", "商户号mchid与请求签名的商户号不一致")
        if self._field(body, "appid") != self.keys.appid:
            raise ApiError(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")

    # -- /v3/certificates -----------------------------------------------------

    def _certificates(self) -> Response:
        self.certificate_downloads += 1
        data = []
        for platform in self.keys.platform_certificates:
            cert = platform.certificate
            data.append(
                {
                    "serial_no": platform.serial,
                    "effective_time": rfc3339(cert.not_valid_before_utc),
                    "expire_time": rfc3339(cert.not_valid_after_utc),
                    "encrypt_certificate": protocol.seal(
                        self.keys.apiv3_key, platform.pem, "certificate"
                    ),
                }
            )
        return self._answer(200, {"data": data})

    # -- orders ---------------------------------------------------------------

    def _create(self, kind: str) -> Response:
        if kind == "codepay":
            return self._codepay()
        trade_types = {"jsapi": "JSAPI", "app": "APP", "h5": "MWEB", "native": "NATIVE"}
        if kind not in trade_types:
            raise ApiError(404, "NOT_FOUND", "请求的资源不存在")
        body = self._body()
        self._check_merchant(body)
        out_trade_no = self._field(body, "out_trade_no")
        description = self._field(body, "description")
        total = self._field(body, "amount", "total", kind=int)
        notify_url = self._field(body, "notify_url")
        if total <= 0:
            raise ApiError(400, "PARAM_ERROR", "订单金额必须大于0")
        if urlsplit(notify_url).scheme not in {"http", "https"}:
            raise ApiError(400, "PARAM_ERROR", "notify_url格式错误")
        payer: Payer | None = None
        now = self.clock.now()
        expires_at = now + dt.timedelta(seconds=DEFAULT_ORDER_SECONDS)
        if "time_expire" in body:
            try:
                expires_at = dt.datetime.fromisoformat(self._field(body, "time_expire"))
            except ValueError:
                raise ApiError(400, "PARAM_ERROR", "time_expire格式错误") from None
            if expires_at.tzinfo is None:
                raise ApiError(400, "PARAM_ERROR", "time_expire需带时区")
        if kind == "h5":
            self._field(body, "scene_info", "payer_client_ip")
            self._field(body, "scene_info", "h5_info", "type")
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False)
        with self._session() as session:
            if kind == "jsapi":
                openid = self._field(body, "payer", "openid")
                payer = self._payer_by_openid(session, openid)
                if payer is None:
                    raise ApiError(400, "PARAM_ERROR", "openid和appid不匹配")
            existing = session.get(Order, out_trade_no)
            if existing is not None:
                self._advance(session, existing)
                if existing.state in PAID:
                    raise ApiError(400, "ORDERPAID", "该订单已支付")
                if existing.state in (TradeState.CLOSED, TradeState.REVOKED):
                    raise ApiError(400, "ORDER_CLOSED", "订单已关闭")
                if existing.request_body != canonical:
                    raise ApiError(400, "OUT_TRADE_NO_USED", "商户订单号重复")
                order = existing
            else:
                order = Order(
                    out_trade_no=out_trade_no,
                    appid=self.keys.appid,
                    mchid=self.keys.mchid,
                    trade_type=trade_types[kind],
                    description=description,
                    attach=body.get("attach"),
                    notify_url=notify_url,
                    total_fen=total,
                    state=TradeState.NOTPAY,
                    prepay_id="wx"
                    + now.astimezone(ZONE).strftime("%d%H%M%S")
                    + secrets.token_hex(13),
                    request_body=canonical,
                    payer_id=payer.id if payer else None,
                    openid=self.openid(payer.id) if payer else None,
                    created_at=now,
                    expires_at=expires_at,
                )
                session.add(order)
            prepay_id = order.prepay_id
        assert prepay_id is not None
        logger.info(
            "sandbox_wechat_order_created",
            extra={"out_trade_no": out_trade_no, "kind": kind},
        )
        if kind == "native":
            return self._answer(
                200, {"code_url": f"weixin://wxpay/bizpayurl?pr={prepay_id}"}
            )
        if kind == "h5":
            return self._answer(200, {"h5_url": self.payer_page_url(prepay_id)})
        return self._answer(200, {"prepay_id": prepay_id})

    def payer_page_url(self, prepay_id: str) -> str:
        """Where the H5 cashier lives: the sandbox's payer page, one level above
        this gateway's mount point."""
        root = request.script_root.removesuffix("/" + CHANNEL)
        # Like the real h5_url it has a query, so the merchant appends
        # ``&redirect_url=…`` for the way back.
        package = secrets.randbelow(10**10)
        return (
            f"{request.host_url.rstrip('/')}{root}/pay/wechat/{prepay_id}"
            f"?package={package}"
        )

    def _codepay(self) -> Response:
        body = self._body()
        self._check_merchant(body)
        out_trade_no = self._field(body, "out_trade_no")
        description = self._field(body, "description")
        total = self._field(body, "amount", "total", kind=int)
        code = self._field(body, "payer", "auth_code")
        if total <= 0:
            raise ApiError(400, "PARAM_ERROR", "订单金额必须大于0")
        if not PAYMENT_CODE.fullmatch(code):
            raise ApiError(400, "PARAM_ERROR", "付款码无效，请重新扫码")
        now = self.clock.now()
        outcome: ApiError | None = None
        with self._session() as session:
            existing = session.get(Order, out_trade_no)
            if existing is not None:
                self._advance(session, existing)
                if existing.state in PAID:
                    raise ApiError(400, "ORDERPAID", "该订单已支付")
                raise ApiError(400, "OUT_TRADE_NO_USED", "商户订单号重复")
            payment_code = session.get(PaymentCode, code)
            if (
                payment_code is None
                or payment_code.used_at is not None
                or payment_code.issued_at
                <= now - dt.timedelta(seconds=CODE_LIFETIME_SECONDS)
            ):
                raise ApiError(
                    403, "AUTHCODEEXPIRE", "二维码已过期，请用户在微信上刷新后再试"
                )
            payment_code.used_at = now
            payer = session.get(Payer, payment_code.payer_id)
            assert payer is not None
            order = Order(
                out_trade_no=out_trade_no,
                appid=self.keys.appid,
                mchid=self.keys.mchid,
                trade_type="MICROPAY",
                description=description,
                attach=body.get("attach"),
                notify_url=None,
                total_fen=total,
                state=TradeState.NOTPAY,
                request_body=json.dumps(body, sort_keys=True, ensure_ascii=False),
                payer_id=payer.id,
                openid=self.openid(payer.id),
                created_at=now,
                expires_at=now + dt.timedelta(seconds=DEFAULT_ORDER_SECONDS),
            )
            session.add(order)
            wait = self.faults.get(CHANNEL, "user_paying_seconds", out_trade_no)
            wait = int(wait or payer.password_seconds or 0)
            if wait > 0:
                payer.password_seconds = 0
                order.state = TradeState.USERPAYING
                order.password_until = now + dt.timedelta(seconds=wait)
                outcome = ApiError(202, "USERPAYING", "用户支付中，需要输入密码")
            elif payer.balance_fen < total:
                order.state = TradeState.PAYERROR
                outcome = ApiError(403, "NOTENOUGH", "用户余额不足")
            else:
                self._pay(session, order, payer, now)
            answer = self._trade(order)
        if outcome is not None:
            raise outcome
        return self._answer(200, answer)

    def _trade(self, order: Order) -> dict[str, Any]:
        trade: dict[str, Any] = {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_trade_no": order.out_trade_no,
            "trade_type": order.trade_type,
            "trade_state": order.state,
            "trade_state_desc": TRADE_STATE_DESC[TradeState(order.state)],
            "amount": {
                "total": order.total_fen,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }
        if order.attach:
            trade["attach"] = order.attach
        if order.transaction_id:
            trade["transaction_id"] = order.transaction_id
        if order.was_paid and order.success_at is not None:
            trade["bank_type"] = "OTHERS"
            trade["success_time"] = rfc3339(order.success_at)
            trade["payer"] = {"openid": order.openid}
            trade["amount"]["payer_total"] = order.total_fen
        return trade

    def _query(self, out_trade_no: str) -> Response:
        return self._query_where(out_trade_no=out_trade_no)

    def _query_by_id(self, transaction_id: str) -> Response:
        return self._query_where(transaction_id=transaction_id)

    def _query_where(self, **where: str) -> Response:
        if request.args.get("mchid") != self.keys.mchid:
            raise ApiError(400, "PARAM_ERROR", "mchid参数错误")
        with self._session() as session:
            if "out_trade_no" in where:
                order = session.get(Order, where["out_trade_no"])
            else:
                order = session.scalar(
                    select(Order).where(Order.transaction_id == where["transaction_id"])
                )
            if order is None:
                raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
            self._advance(session, order)
            answer = self._trade(order)
        return self._answer(200, answer)

    def _close(self, out_trade_no: str) -> Response:
        body = self._body()
        if self._field(body, "mchid") != self.keys.mchid:
            raise ApiError(400, "PARAM_ERROR", "mchid参数错误")
        with self._session() as session:
            order = session.get(Order, out_trade_no)
            if order is None:
                raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
            self._advance(session, order)
            if order.state in PAID:
                raise ApiError(400, "ORDERPAID", "订单已支付，不能发起关单")
            if order.state != TradeState.REVOKED:
                order.state = TradeState.CLOSED
        logger.info("sandbox_wechat_closed", extra={"out_trade_no": out_trade_no})
        return self._answer(204, None)

    def _reverse(self, out_trade_no: str) -> Response:
        body = self._body()
        self._check_merchant(body)
        with self._session() as session:
            order = session.get(Order, out_trade_no)
            if order is None:
                raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
            self._advance(session, order)
            if order.trade_type != "MICROPAY":
                raise ApiError(400, "INVALID_REQUEST", "非付款码支付订单不可撤销")
            if order.state == TradeState.REFUND:
                raise ApiError(400, "INVALID_REQUEST", "订单已发生退款，不可撤销")
            if order.state == TradeState.SUCCESS:
                payer = session.get(Payer, order.payer_id)
                assert payer is not None
                payer.balance_fen += order.total_fen
            if order.state != TradeState.REVOKED:
                order.state = TradeState.REVOKED
                order.revoked_at = self.clock.now()
        logger.info("sandbox_wechat_reversed", extra={"out_trade_no": out_trade_no})
        return self._answer(
            200,
            {
                "appid": self.keys.appid,
                "mchid": self.keys.mchid,
                "out_trade_no": out_trade_no,
            },
        )

    # -- refunds --------------------------------------------------------------

    def _refund(self) -> Response:
        body = self._body()
        out_refund_no = self._field(body, "out_refund_no")
        amount = self._field(body, "amount", "refund", kind=int)
        total = self._field(body, "amount", "total", kind=int)
        if self._field(body, "amount", "currency") != "CNY":
            raise ApiError(400, "PARAM_ERROR", "退款币种只支持CNY")
        now = self.clock.now()
        with self._session() as session:
            if body.get("transaction_id"):
                order = session.scalar(
                    select(Order).where(Order.transaction_id == body["transaction_id"])
                )
            else:
                order = session.get(Order, self._field(body, "out_trade_no"))
            if order is None:
                raise ApiError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
            self._advance(session, order)
            existing = session.get(Refund, out_refund_no)
            if existing is not None:
                if (
                    existing.out_trade_no != order.out_trade_no
                    or existing.amount_fen != amount
                ):
                    raise ApiError(
                        400, "INVALID_REQUEST", "退款单号重复，且参数与原退款不一致"
                    )
                return self._answer(200, self._refund_json(existing, order))
            if order.state not in PAID:
                raise ApiError(400, "INVALID_REQUEST", "订单状态不正确，不能退款")
            if total != order.total_fen:
                raise ApiError(400, "INVALID_REQUEST", "订单金额与原订单不一致")
            refunded = sum(
                r.amount_fen
                for r in session.scalars(
                    select(Refund).where(Refund.out_trade_no == order.out_trade_no)
                )
            )
            if amount <= 0 or refunded + amount > order.total_fen:
                raise ApiError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
            refund = Refund(
                out_refund_no=out_refund_no,
                refund_id="50"
                + secrets.token_hex(4)[:7].translate(str.maketrans("abcdef", "123456"))
                + now.astimezone(ZONE).strftime("%Y%m%d")
                + "".join(secrets.choice("0123456789") for _ in range(12)),
                out_trade_no=order.out_trade_no,
                amount_fen=amount,
                reason=body.get("reason"),
                notify_url=body.get("notify_url"),
                status="PROCESSING",
                created_at=now,
                success_due=now + dt.timedelta(seconds=self.refund_seconds),
            )
            session.add(refund)
            session.flush()
            answer = self._refund_json(refund, order)
            if refund.notify_url:
                succeeded = dict(
                    answer,
                    refund_status="SUCCESS",
                    success_time=rfc3339(refund.success_due),
                )
                self.notifier.send(
                    out_trade_no=order.out_trade_no,
                    url=refund.notify_url,
                    event_type="REFUND.SUCCESS",
                    summary="退款成功",
                    original_type="refund",
                    resource={
                        key: succeeded[key]
                        for key in (
                            "out_trade_no",
                            "transaction_id",
                            "out_refund_no",
                            "refund_id",
                            "refund_status",
                            "success_time",
                            "user_received_account",
                        )
                    }
                    | {
                        "mchid": self.keys.mchid,
                        "amount": {
                            k: answer["amount"][k]
                            for k in ("total", "refund", "payer_total", "payer_refund")
                        },
                    },
                    delay_seconds=self.refund_seconds,
                )
        logger.info("sandbox_wechat_refund", extra={"out_refund_no": out_refund_no})
        return self._answer(200, answer)

    def _refund_json(self, refund: Refund, order: Order) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": rfc3339(refund.created_at),
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": order.total_fen,
                "refund": refund.amount_fen,
                "payer_total": order.total_fen,
                "payer_refund": refund.amount_fen,
                "settlement_total": order.total_fen,
                "settlement_refund": refund.amount_fen,
                "discount_refund": 0,
                "currency": "CNY",
            },
        }
        if refund.status == "SUCCESS":
            answer["success_time"] = rfc3339(refund.success_due)
        return answer

    def _query_refund(self, out_refund_no: str) -> Response:
        with self._session() as session:
            refund = session.get(Refund, out_refund_no)
            if refund is None:
                raise ApiError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            order = session.get(Order, refund.out_trade_no)
            assert order is not None
            self._advance(session, order)
            answer = self._refund_json(refund, order)
        return self._answer(200, answer)

    # -- bills ----------------------------------------------------------------

    def _trade_bill(self) -> Response:
        try:
            day = dt.date.fromisoformat(request.args.get("bill_date", ""))
        except ValueError:
            raise ApiError(
                400, "PARAM_ERROR", "bill_date格式错误，应为yyyy-MM-dd"
            ) from None
        bill_type = request.args.get("bill_type", "ALL")
        if bill_type not in {"ALL", "SUCCESS", "REFUND"}:
            raise ApiError(400, "PARAM_ERROR", "bill_type取值错误")
        tar_type = request.args.get("tar_type")
        if tar_type not in {None, "GZIP"}:
            raise ApiError(400, "PARAM_ERROR", "tar_type取值错误")
        now = self.clock.now()
        # The bill for day D is made from 09:00 on D+1; WeChat Pay advises 10:00.
        ready = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(10), ZONE)
        if now < ready:
            raise ApiError(
                400, "NO_STATEMENT_EXIST", "账单尚未生成，请次日10点后再下载"
            )
        with self._session() as session:
            orders = session.scalars(select(Order).where(Order.was_paid)).all()
            for order in orders:
                self._advance(session, order)
            refunds = session.scalars(
                select(Refund).where(Refund.status == "SUCCESS")
            ).all()
            content = bill.trade_bill(
                day=day,
                bill_type=bill_type,
                orders=orders,
                refunds=refunds,
                orders_by_id={o.out_trade_no: o for o in orders},
                fault=lambda out_trade_no: self.faults.get(
                    CHANNEL, "bill", out_trade_no
                ),
            )
        if content is None:
            raise ApiError(400, "NO_STATEMENT_EXIST", "当日无交易，账单不存在")
        raw = content.encode()
        token = secrets.token_urlsafe(32)
        for stale in [t for t, entry in self._bills.items() if entry[2] <= now]:
            del self._bills[stale]
        self._bills[token] = (
            raw,
            tar_type == "GZIP",
            now + dt.timedelta(seconds=BILL_URL_SECONDS),
        )
        logger.info("sandbox_wechat_bill", extra={"day": day.isoformat()})
        return self._answer(
            200,
            {
                "hash_type": "SHA1",
                "hash_value": hashlib.sha1(raw).hexdigest(),
                "download_url": f"{request.url_root}v3/billdownload/file?"
                + urlencode({"token": token}),
            },
        )

    def _download(self) -> Response:
        entry = self._bills.get(request.args.get("token", ""))
        if entry is None or entry[2] <= self.clock.now():
            raise ApiError(400, "INVALID_REQUEST", "下载地址已失效，请重新申请账单")
        raw, gzipped, _ = entry
        damage = self.faults.get(CHANNEL, "bill_download")
        if damage == "corrupt":
            # One byte changed in transit: the hash given earlier no longer fits.
            index = len(raw) // 2
            raw = raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1 :]
        elif damage == "truncate":
            raw = raw[: len(raw) * 2 // 3]
        content = gzip.compress(raw, mtime=0) if gzipped else raw
        # The real download is not signed: its integrity is the hash's job.
        return Response(content, status=200, content_type="application/octet-stream")

    # -- notifications --------------------------------------------------------

    def _notify_payment(self, order: Order) -> None:
        if not order.notify_url:
            return
        self.notifier.send(
            out_trade_no=order.out_trade_no,
            url=order.notify_url,
            event_type="TRANSACTION.SUCCESS",
            summary="支付成功",
            original_type="transaction",
            resource=self._trade(order),
        )

    def release_held(self) -> int:
        """Send notifications held back by the ``reorder`` fault now."""
        return self.notifier.release_held()

    # -- web OAuth ------------------------------------------------------------

    def _authorize(self) -> Any:
        args = request.values
        redirect_uri = args.get("redirect_uri", "")
        if args.get("appid") != self.keys.appid:
            return render_template(
                "wechat_oauth_error.html", message="appid 参数错误 / wrong appid"
            ), 400
        if (
            args.get("response_type") != "code"
            or args.get("scope") not in {"snsapi_base", "snsapi_userinfo"}
            or urlsplit(redirect_uri).scheme not in {"http", "https"}
        ):
            return render_template(
                "wechat_oauth_error.html",
                message="redirect_uri / scope / response_type 参数错误",
            ), 400
        payer_id = (
            args.get("payer")
            if request.method == "POST"
            else request.cookies.get("sandbox_wechat_payer")
        )
        if not payer_id:
            return render_template(
                "wechat_oauth.html", payers=self.payers(), args=args.to_dict()
            )
        code = secrets.token_urlsafe(24)
        with self._session() as session:
            if session.get(Payer, payer_id) is None:
                return render_template(
                    "wechat_oauth_error.html", message="no such demo payer"
                ), 400
            session.add(
                OAuthCode(
                    code=code,
                    appid=self.keys.appid,
                    payer_id=payer_id,
                    scope=args["scope"],
                    issued_at=self.clock.now(),
                )
            )
        parts = urlsplit(redirect_uri)
        query = (
            parts.query
            + ("&" if parts.query else "")
            + urlencode({"code": code, "state": args.get("state", "")})
        )
        response = make_response(redirect(urlunsplit(parts._replace(query=query))))
        # Like being signed in to WeChat: this browser is this payer from now on.
        response.set_cookie("sandbox_wechat_payer", payer_id, samesite="Lax")
        return response

    def _access_token(self) -> Response:
        args = request.args

        def error(code: int, message: str) -> Response:
            return Response(
                json.dumps({"errcode": code, "errmsg": message}),
                content_type="application/json",
            )

        if args.get("appid") != self.keys.appid:
            return error(40013, "invalid appid")
        if not secrets.compare_digest(args.get("secret", ""), self.keys.app_secret):
            return error(40125, "invalid appsecret")
        if args.get("grant_type") != "authorization_code":
            return error(40002, "invalid grant_type")
        with self._session() as session:
            code = session.get(OAuthCode, args.get("code", ""))
            if code is None or code.issued_at <= self.clock.now() - dt.timedelta(
                seconds=OAUTH_CODE_SECONDS
            ):
                return error(40029, "invalid code")
            if code.used:
                return error(40163, "code been used")
            code.used = True
            answer = {
                "access_token": secrets.token_urlsafe(48),
                "expires_in": 7200,
                "refresh_token": secrets.token_urlsafe(48),
                "openid": self.openid(code.payer_id),
                "scope": code.scope,
            }
        return Response(json.dumps(answer), content_type="application/json")
