"""The sandbox Alipay open-platform gateway: ``gateway.do``, the cashier and payer
pages, user authorisation, bill files, notifications and fault switches.

Mounted at ``/alipay`` in the sandbox; the service's SDK posts to
``<base>/sandbox/alipay/gateway.do``. Every request's RSA2 signature is checked
with the app's public key and every answer is signed with Alipay's key, as
``keys`` describes. Answers and error shapes follow the open platform's: codes
10000 (success), 10003 (waiting for the payer), 20000 (service unavailable),
40002 (invalid arguments, e.g. ``isv.invalid-signature``) and 40004 (business
failure, with an ``ACQ.*`` sub_code).

Fault switches (``sandbox.core.Faults``, channel ``alipay``, for one
``out_trade_no`` or every order; also through ``/alipay/control/faults``):

==========================  ==============================================
``latency_ms``              wait this long before answering
``no_answer``               ``before``: drop the connection without acting;
                            ``after``: act, then drop it
``server_error``            ``5xx``: HTTP 502 page; ``20000``: isp.unknow-error;
                            ``ACQ``: 40004 ACQ.SYSTEM_ERROR (cancel: retry_flag Y);
                            ``ACQ_no_retry``: the same, cancel with retry_flag N
``user_paying_seconds``     a code payment answers 10003 and completes this
                            many seconds later (sandbox clock)
``response_signature``      ``bad`` (signed with another key) or ``missing``
``notification``            ``drop``, ``duplicate``, ``reorder`` (held back
                            and sent after the next notification, or on
                            ``POST /alipay/control/notifications/release``),
                            ``bad_signature`` or ``different_amount``
``notification_delay_s``    send notifications this many seconds late
``bill_missing_line``       leave the order out of its day's bill
``bill_amount_delta_fen``   change the order's amount in the bill by this much
``bill_after_midnight``     list the order as completed just after midnight,
                            i.e. in the next day's bill
==========================  ==============================================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, abort, redirect, render_template, request, url_for
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.wrappers import Response

from sandbox.alipay import bills, signing
from sandbox.alipay.keys import SANDBOX_SELLER_EMAIL, ensure_keys
from sandbox.alipay.models import AuthCode, Base, Payer, PaymentCode, Refund, Trade
from sandbox.core import ALIPAY_RETRY_SCHEDULE, Delivery, Gateway, Sandbox

logger = logging.getLogger(__name__)

CHANNEL = "alipay"
SHANGHAI = bills.SHANGHAI
STAMP = "%Y-%m-%d %H:%M:%S"

# Our choice where Alipay publishes no number: requests stamped more than this
# far from the gateway's clock are refused (isv.invalid-timestamp).
TIMESTAMP_TOLERANCE = dt.timedelta(minutes=15)
# A code is shown for a minute before the app refreshes it and stays usable for
# two, as in the Alipay app.
CODE_REFRESH = dt.timedelta(seconds=60)
CODE_LIFETIME = dt.timedelta(seconds=120)
# Unpaid QR, WAP and page trades close after this unless the request says.
DEFAULT_TRADE_TIMEOUT = dt.timedelta(hours=2)
BILL_URL_LIFETIME = dt.timedelta(seconds=30)
CANCEL_WINDOW = dt.timedelta(hours=24)

CODE_PATTERN = re.compile(r"(2[5-9]|30)\d{14,22}")
AMOUNT_PATTERN = re.compile(r"(\d{1,9})(?:\.(\d{1,2}))?")
EXPRESS_PATTERN = re.compile(r"(\d+)([mhdc])")

# The sandbox's demo people, with the same ids in every gateway so that the shared
# payer page shows one person's codes together; each also has an Alipay user id
# (2088…) and logon id, as Alipay's own users do.
DEMO_PAYERS = (
    (
        "demo-1",
        "2088102177000001",
        "zhangsan@sandbox.example",
        "张三",
        "Zhang San",
        100_000,
    ),
    ("demo-2", "2088102177000002", "138****0002", "李四", "Li Si", 20_000),
    ("demo-3", "2088102177000003", "wangwu@sandbox.example", "王五", "Wang Wu", 500),
)


class _Answer(Exception):
    """A finished answer (success or error payload) raised out of a handler."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload.get("sub_code") or payload.get("code"))
        self.payload = payload


def _fail(sub_code: str, sub_msg: str, code: str = "40004", **extra: Any) -> _Answer:
    msg = {
        "20000": "Service Currently Unavailable",
        "40001": "Missing Required Arguments",
        "40002": "Invalid Arguments",
        "40004": "Business Failed",
    }[code]
    return _Answer(
        {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg, **extra}
    )


def _ok(**fields: Any) -> dict[str, Any]:
    return {"code": "10000", "msg": "Success", **fields}


def fen_from_yuan(text: str) -> int | None:
    match = AMOUNT_PATTERN.fullmatch(text.strip())
    if match is None:
        return None
    return int(match[1]) * 100 + int((match[2] or "").ljust(2, "0"))


def _stamp(moment: dt.datetime | None) -> str:
    return moment.astimezone(SHANGHAI).strftime(STAMP) if moment else ""


def _mask_logon(logon_id: str) -> str:
    if "@" in logon_id:
        name, domain = logon_id.split("@", 1)
        return f"{name[:3]}***@{domain}"
    return logon_id[:3] + "****" + logon_id[-4:]


@dataclasses.dataclass
class _Notice:
    """One notification's parameters and signing key; re-signed with the time
    of each attempt, since ``notify_time`` is when Alipay sends it."""

    params: dict[str, str]
    key: rsa.RSAPrivateKey
    delivery: Delivery | None = None

    def body(self, at: dt.datetime) -> bytes:
        self.params["notify_time"] = _stamp(at)
        self.params.pop("sign", None)
        self.params["sign"] = signing.sign(
            self.key, signing.notification_content(self.params)
        )
        return urlencode(self.params).encode("utf-8")


# What the sandbox's home page lists; the module docstring says what each does.
FAULT_NAMES = {
    "latency_ms": "wait this many milliseconds before answering",
    "no_answer": "before: drop the connection without acting; after: act, then drop",
    "server_error": "5xx (HTTP 502) | 20000 (isp.unknow-error) | ACQ (SYSTEM_ERROR)",
    "user_paying_seconds": "code payments answer 10003 for this many seconds",
    "response_signature": "bad (another key) | missing",
    "notification": "drop | duplicate | reorder | bad_signature | different_amount",
    "notification_delay_s": "send notifications this many seconds late",
    "bill_missing_line": "leave the order out of its day's bill",
    "bill_amount_delta_fen": "change the order's amount in the bill by this much",
    "bill_after_midnight": "list the order just after midnight (next day's bill)",
}


class AlipayGateway(Gateway):
    """The imitated Alipay, with its own database, keys and Flask app."""

    name = CHANNEL
    fault_names = FAULT_NAMES

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.clock = sandbox.clock
        self.faults = sandbox.faults
        self.outbox = sandbox.outbox
        instance = Path(sandbox.instance_path)
        self.keys = ensure_keys(instance)
        self._app_public = signing.load_public(self.keys.app_public_key)
        self._alipay_private = signing.load_private(self.keys.alipay_private_key)
        self._bill_secret = secrets.token_bytes(32)
        self.engine = create_engine(
            f"sqlite:///{(instance / 'sandbox' / 'alipay.sqlite3').resolve()}",
            connect_args={"check_same_thread": False},
        )
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # One request changes the gateway's state at a time: SQLite and the
        # simple balance arithmetic below need nothing cleverer.
        self._lock = threading.RLock()
        self._held: list[tuple[_Notice, str]] = []
        self.dropped: list[dict[str, str]] = []
        self._seed_payers()
        self.app = self._make_app()

    @functools.cached_property
    def _stranger(self) -> rsa.RSAPrivateKey:
        """Signs the "wrong signature" faults: a key nobody is configured with,
        made only when a fault needs it since RSA generation is slow."""
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # -- the payer's side, shared with the sandbox's control pages ---------------

    def payers(self) -> list[dict[str, Any]]:
        """Demo payers: ``id`` is the sandbox-wide demo id, ``user_id`` the
        Alipay user id that answers and notifications carry."""
        with self._session() as session:
            return [
                {
                    "id": payer.demo_id,
                    "user_id": payer.user_id,
                    "name": payer.name_zh,
                    "name_zh": payer.name_zh,
                    "name_en": payer.name_en,
                    "logon_id": payer.logon_id,
                    "balance_fen": payer.balance_fen,
                    "password_seconds": payer.password_seconds,
                }
                for payer in session.scalars(select(Payer).order_by(Payer.demo_id))
            ]

    def current_code(self, payer_id: str) -> str:
        """The payer's code (by demo id or Alipay user id): the one shown until a
        minute has passed or it was used, then a new one. ``KeyError`` for an
        unknown payer."""
        now = self.clock.now()
        with self._session() as session:
            payer = self._payer(session, payer_id)
            latest = session.scalars(
                select(PaymentCode)
                .where(
                    PaymentCode.payer_id == payer.user_id,
                    PaymentCode.used_at.is_(None),
                )
                .order_by(PaymentCode.issued_at.desc())
            ).first()
            if latest is not None and now - latest.issued_at < CODE_REFRESH:
                return latest.code
            code = str(secrets.choice(range(25, 31))) + "".join(
                secrets.choice("0123456789") for _ in range(16)
            )
            session.add(PaymentCode(code=code, payer_id=payer.user_id, issued_at=now))
        return code

    def set_password_needed(self, payer_id: str, seconds: int) -> None:
        """The payer's next code payment answers 10003 and completes ``seconds``
        later on the sandbox clock, as if the payer typed the password then;
        0 turns the switch off."""
        with self._session() as session:
            self._payer(session, payer_id).password_seconds = max(0, seconds)

    def reset_payers(self) -> None:
        """Every demo payer back to their starting balance, no password switch."""
        with self._session() as session:
            for demo_id, _, _, _, _, balance_fen in DEMO_PAYERS:
                payer = self._payer(session, demo_id)
                payer.balance_fen = balance_fen
                payer.password_seconds = 0

    def set_balance(self, payer_id: str, balance_fen: int) -> None:
        with self._session() as session:
            self._payer(session, payer_id).balance_fen = balance_fen

    @staticmethod
    def _payer(session: Session, payer_id: str) -> Payer:
        payer = session.scalars(
            select(Payer).where(
                (Payer.demo_id == payer_id) | (Payer.user_id == payer_id)
            )
        ).first()
        if payer is None:
            raise KeyError(payer_id)
        return payer

    def trade(self, out_trade_no: str) -> dict[str, Any] | None:
        """A trade's state, for tests and the control API."""
        with self._session() as session:
            self._advance(session)
            trade = self._find(session, out_trade_no)
            if trade is None:
                return None
            return {
                "out_trade_no": trade.out_trade_no,
                "trade_no": trade.trade_no,
                "status": trade.status,
                "visible": trade.visible,
                "total_fen": trade.total_fen,
                "refunded_fen": trade.refunded_fen,
                "buyer_id": trade.buyer_id,
                "pay_path": f"/pay/{trade.pay_token}",
            }

    def advance(self) -> None:
        """Complete code payments whose password wait is over and close expired
        trades; every request does this first, tests may call it directly."""
        with self._session() as session:
            self._advance(session)

    def release_held_notifications(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for notice, url in held:
            self._enqueue(notice, 0, url)

    # -- plumbing -----------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._lock, self._sessions() as session:
            yield session
            session.commit()

    def _seed_payers(self) -> None:
        with self._session() as session:
            if session.scalar(select(func.count()).select_from(Payer)):
                return
            for demo_id, user_id, logon_id, zh, en, balance in DEMO_PAYERS:
                session.add(
                    Payer(
                        demo_id=demo_id,
                        user_id=user_id,
                        logon_id=logon_id,
                        name_zh=zh,
                        name_en=en,
                        balance_fen=balance,
                    )
                )

    def _find(
        self, session: Session, out_trade_no: str | None, trade_no: str | None = None
    ) -> Trade | None:
        query = select(Trade).where(Trade.app_id == self.keys.app_id)
        if trade_no:
            query = query.where(Trade.trade_no == trade_no)
        elif out_trade_no:
            query = query.where(Trade.out_trade_no == out_trade_no)
        else:
            return None
        return session.scalars(query).first()

    def _trade_no(self, session: Session) -> str:
        count = session.scalar(select(func.count()).select_from(Trade)) or 0
        return (
            f"{self.clock.now().astimezone(SHANGHAI):%Y%m%d}22001"
            f"{secrets.randbelow(10_000):04d}{count + 1:011d}"
        )

    def _advance(self, session: Session) -> None:
        now = self.clock.now()
        waiting = session.scalars(
            select(Trade).where(Trade.status == "WAIT_BUYER_PAY")
        ).all()
        for trade in waiting:
            if trade.paying_until is not None and trade.paying_until <= now:
                payer = session.get(Payer, trade.buyer_id)
                if payer is not None and payer.balance_fen >= trade.total_fen:
                    self._settle(session, trade, payer, trade.paying_until)
                else:
                    self._close(trade, trade.paying_until)
            elif (
                trade.paying_until is None
                and trade.expires_at is not None
                and trade.expires_at <= now
            ):
                self._close(trade, trade.expires_at)

    def _settle(
        self, session: Session, trade: Trade, payer: Payer, at: dt.datetime
    ) -> None:
        payer.balance_fen -= trade.total_fen
        trade.status = "TRADE_SUCCESS"
        trade.visible = True
        trade.buyer_id = payer.user_id
        trade.buyer_logon_id = _mask_logon(payer.logon_id)
        trade.paid_at = at
        trade.paying_until = None
        session.flush()
        logger.info("sandbox_alipay_paid", extra={"out_trade_no": trade.out_trade_no})
        self._notify(trade)

    def _close(self, trade: Trade, at: dt.datetime) -> None:
        trade.status = "TRADE_CLOSED"
        trade.closed_at = at
        trade.paying_until = None

    # -- notifications ------------------------------------------------------------

    def _notify(self, trade: Trade, refund: Refund | None = None) -> None:
        if not trade.notify_url:
            return
        out = trade.out_trade_no
        yuan = bills.yuan
        params = {
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(17),
            "app_id": self.keys.app_id,
            "auth_app_id": self.keys.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": trade.trade_no,
            "out_trade_no": out,
            "buyer_id": trade.buyer_id or "",
            "buyer_logon_id": trade.buyer_logon_id or "",
            "seller_id": self.keys.seller_id,
            "seller_email": SANDBOX_SELLER_EMAIL,
            "trade_status": trade.status,
            "total_amount": yuan(trade.total_fen),
            "receipt_amount": yuan(trade.total_fen - trade.refunded_fen),
            "invoice_amount": yuan(trade.total_fen - trade.refunded_fen),
            "buyer_pay_amount": yuan(trade.total_fen - trade.refunded_fen),
            "point_amount": "0.00",
            "subject": trade.subject,
            "gmt_create": _stamp(trade.created_at),
            "gmt_payment": _stamp(trade.paid_at),
            "fund_bill_list": json.dumps(
                [{"amount": yuan(trade.total_fen), "fundChannel": "ALIPAYACCOUNT"}],
                separators=(",", ":"),
            ),
        }
        if trade.passback_params:
            params["passback_params"] = trade.passback_params
        if refund is not None:
            params["out_biz_no"] = refund.out_request_no
            params["refund_fee"] = yuan(trade.refunded_fen)
            params["gmt_refund"] = _stamp(refund.refunded_at) + ".000"
        if trade.closed_at is not None:
            params["gmt_close"] = _stamp(trade.closed_at)
        params = {name: value for name, value in params.items() if value != ""}

        mode = self.faults.get(CHANNEL, "notification", out)
        delay = float(self.faults.get(CHANNEL, "notification_delay_s", out) or 0)
        key = self._alipay_private
        if mode == "different_amount":
            params["total_amount"] = yuan(trade.total_fen + 100)
        elif mode == "bad_signature":
            key = self._stranger
        notice = _Notice(params, key)
        extra = {"out_trade_no": out, "notify_id": params["notify_id"], "fault": mode}
        if mode == "drop":
            self.dropped.append(dict(params))
            logger.info("sandbox_alipay_notification_dropped", extra=extra)
            return
        if mode == "reorder" and not self._held:
            self._held.append((notice, trade.notify_url))
            logger.info("sandbox_alipay_notification_held", extra=extra)
            return
        self._enqueue(notice, delay, trade.notify_url)
        if mode == "duplicate":
            self._enqueue(_Notice(dict(params), key), delay, trade.notify_url)
        if self._held:
            self.release_held_notifications()

    def _enqueue(self, notice: _Notice, delay: float, url: str) -> None:
        def stamp(delivery: Delivery) -> None:
            # Each attempt is signed afresh with notify_time = when it is sent,
            # as Alipay does, however late a retry or a held delivery goes out.
            delivery.body = notice.body(self.clock.now())

        def accepted(response: requests.Response) -> bool:
            return response.status_code == 200 and response.text.strip() == "success"

        first = self.clock.now() + dt.timedelta(seconds=delay)
        notice.delivery = self.outbox.enqueue(
            channel=CHANNEL,
            out_trade_no=notice.params["out_trade_no"],
            url=url,
            body=notice.body(first),
            headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"
            },
            accepted=accepted,
            schedule=ALIPAY_RETRY_SCHEDULE,
            delay_seconds=delay,
            before_attempt=stamp,
        )

    # -- the Flask app --------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask(__name__, template_folder="templates")
        app.add_url_rule(
            "/gateway.do", "gateway", self._gateway, methods=["GET", "POST"]
        )
        app.add_url_rule(
            "/pay/<token>", "pay_page", self._pay_page, methods=["GET", "POST"]
        )
        app.add_url_rule("/qr/<token>", "scan", self._scan)
        app.add_url_rule("/cashier", "cashier", self._cashier_by_trade_no)
        app.add_url_rule(
            "/oauth2/publicAppAuthorize.htm",
            "authorize",
            self._authorize,
            methods=["GET", "POST"],
        )
        app.add_url_rule("/downloadBillFile.resource", "bill_file", self._bill_file)
        app.add_url_rule(
            "/control/faults",
            "faults",
            self._control_faults,
            methods=["GET", "POST", "DELETE"],
        )
        app.add_url_rule("/control/payers", "control_payers", self._control_payers)
        app.add_url_rule(
            "/control/payers/<payer_id>",
            "control_payer",
            self._control_payer,
            methods=["GET", "POST"],
        )
        app.add_url_rule(
            "/control/trades/<out_trade_no>", "control_trade", self._control_trade
        )
        app.add_url_rule(
            "/control/notifications/release",
            "release",
            self._control_release,
            methods=["POST"],
        )
        return app

    def _gateway(self) -> Response:
        params = {name: value for name, value in request.values.items()}
        method = params.get("method", "")
        biz = self._biz(params)
        out = biz.get("out_trade_no") or None
        extra = {"method": method, "out_trade_no": out}
        logger.info("sandbox_alipay_request", extra=extra)

        latency = self.faults.get(CHANNEL, "latency_ms", out)
        if latency:
            time.sleep(float(latency) / 1000)
        no_answer = self.faults.get(CHANNEL, "no_answer", out)
        if no_answer == "before":
            return self._hang_up()
        server_error = self.faults.get(CHANNEL, "server_error", out)
        if server_error == "5xx":
            return Response(
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
                status=502,
                content_type="text/html",
            )

        key = method.replace(".", "_") + "_response" if method else "error_response"
        page_flow = method in ("alipay.trade.wap.pay", "alipay.trade.page.pay")
        try:
            self._check_public(params)
            handler = self._handlers().get(method)
            if handler is None:
                key = "error_response"
                raise _fail("isv.invalid-method", "不存在的方法名", code="40002")
            if server_error == "20000":
                raise _fail("isp.unknow-error", "系统繁忙", code="20000")
            if server_error in ("ACQ", "ACQ_no_retry"):
                flag = {}
                if method == "alipay.trade.cancel":
                    flag = {"retry_flag": "Y" if server_error == "ACQ" else "N"}
                raise _fail("ACQ.SYSTEM_ERROR", "系统错误", **flag)
            with self._session() as session:
                self._advance(session)
                result = handler(session, params, biz)
        except _Answer as answer:
            if page_flow:
                return self._error_page(answer.payload)
            result = answer.payload
        if no_answer == "after":
            return self._hang_up()
        if isinstance(result, Response):
            return result
        if method == "alipay.system.oauth.token" and "code" in result:
            # The open platform answers a refused token exchange under
            # error_response, a granted one without any code at all.
            key = "error_response"
        return self._signed_answer(key, result, out)

    def _handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "alipay.trade.pay": self._trade_pay,
            "alipay.trade.precreate": self._precreate,
            "alipay.trade.create": self._trade_create,
            "alipay.trade.wap.pay": self._cashier,
            "alipay.trade.page.pay": self._cashier,
            "alipay.trade.query": self._query,
            "alipay.trade.cancel": self._cancel,
            "alipay.trade.close": self._close_trade,
            "alipay.trade.refund": self._refund,
            "alipay.trade.fastpay.refund.query": self._refund_query,
            "alipay.data.dataservice.bill.downloadurl.query": self._bill_url,
            "alipay.system.oauth.token": self._oauth_token,
        }

    @staticmethod
    def _biz(params: dict[str, str]) -> dict[str, Any]:
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            return {}
        return biz if isinstance(biz, dict) else {}

    def _check_public(self, params: dict[str, str]) -> None:
        for name in ("app_id", "method", "sign_type", "timestamp", "version"):
            if not params.get(name):
                raise _fail(
                    f"isv.missing-{name.replace('_', '-')}",
                    f"缺少{name}参数",
                    code="40001",
                )
        if not params.get("sign"):
            raise _fail("isv.missing-signature", "缺少签名参数", code="40001")
        if params["app_id"] != self.keys.app_id:
            raise _fail("isv.invalid-app-id", "无效的AppID参数", code="40002")
        if params["sign_type"] != "RSA2":
            raise _fail("isv.invalid-signature-type", "无效的签名类型", code="40002")
        if params.get("charset", "utf-8").lower() != "utf-8":
            raise _fail("isv.invalid-charset", "字符集错误", code="40002")
        content = signing.request_content(params)
        if not signing.verify(self._app_public, content, params["sign"]):
            logger.info(
                "sandbox_alipay_bad_signature", extra={"method": params.get("method")}
            )
            raise _fail(
                "isv.invalid-signature",
                "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，"
                f"网关生成的验签字符串为：{content}",
                code="40002",
            )
        try:
            stamp = dt.datetime.strptime(params["timestamp"], STAMP).replace(
                tzinfo=SHANGHAI
            )
        except ValueError as error:
            raise _fail(
                "isv.invalid-timestamp", "非法的时间戳参数", code="40002"
            ) from error
        if abs(stamp - self.clock.now()) > TIMESTAMP_TOLERANCE:
            raise _fail(
                "isv.invalid-timestamp",
                "非法的时间戳参数：与支付宝服务器时间相差过大",
                code="40002",
            )

    def _signed_answer(
        self, key: str, payload: dict[str, Any], out_trade_no: str | None
    ) -> Response:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        mode = self.faults.get(CHANNEL, "response_signature", out_trade_no)
        if mode == "missing":
            text = f'{{"{key}":{body}}}'
        else:
            signer = self._stranger if mode == "bad" else self._alipay_private
            text = f'{{"{key}":{body},"sign":"{signing.sign(signer, body)}"}}'
        return Response(text, content_type="text/html;charset=utf-8")

    @staticmethod
    def _hang_up() -> Response:
        # Shut the socket under the server's feet: the client sees the
        # connection closed with no answer, as when a proxy or Alipay drops it.
        connection = request.environ.get("werkzeug.socket")
        if connection is not None:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return Response(b"", status=500)

    def _error_page(self, payload: dict[str, Any]) -> Response:
        return Response(
            render_template("alipay/error.html", error=payload),
            status=200,
            content_type="text/html;charset=utf-8",
        )

    # -- alipay.trade.* -------------------------------------------------------------

    @staticmethod
    def _amount(biz: dict[str, Any], name: str = "total_amount") -> int:
        fen = fen_from_yuan(str(biz.get(name, "")))
        if fen is None or not 1 <= fen <= 10_000_000_000:
            raise _fail("ACQ.INVALID_PARAMETER", f"参数无效：{name}")
        return fen

    @staticmethod
    def _required(biz: dict[str, Any], *names: str) -> None:
        for name in names:
            if not biz.get(name):
                raise _fail("ACQ.INVALID_PARAMETER", f"缺少参数：{name}")

    def _expiry(self, biz: dict[str, Any], now: dt.datetime) -> dt.datetime:
        if biz.get("time_expire"):
            try:
                return dt.datetime.strptime(biz["time_expire"], STAMP).replace(
                    tzinfo=SHANGHAI
                )
            except ValueError as error:
                raise _fail("ACQ.INVALID_PARAMETER", "参数无效：time_expire") from error
        match = EXPRESS_PATTERN.fullmatch(str(biz.get("timeout_express", "")))
        if match is None:
            return now + DEFAULT_TRADE_TIMEOUT
        number, unit = int(match[1]), match[2]
        if unit == "c":
            local = now.astimezone(SHANGHAI)
            return dt.datetime.combine(
                local.date() + dt.timedelta(days=1), dt.time(), SHANGHAI
            )
        return now + dt.timedelta(minutes=number * {"m": 1, "h": 60, "d": 1440}[unit])

    def _new_trade(
        self,
        session: Session,
        params: dict[str, str],
        biz: dict[str, Any],
        *,
        visible: bool,
    ) -> Trade:
        now = self.clock.now()
        trade = Trade(
            trade_no=self._trade_no(session),
            app_id=self.keys.app_id,
            out_trade_no=biz["out_trade_no"],
            method=params["method"],
            subject=str(biz["subject"])[:256],
            total_fen=self._amount(biz),
            status="WAIT_BUYER_PAY",
            visible=visible,
            pay_token=secrets.token_urlsafe(16),
            notify_url=params.get("notify_url") or None,
            return_url=params.get("return_url") or None,
            quit_url=biz.get("quit_url") or None,
            passback_params=biz.get("passback_params") or None,
            created_at=now,
            expires_at=self._expiry(biz, now),
        )
        session.add(trade)
        session.flush()
        return trade

    def _trade_fields(self, trade: Trade) -> dict[str, Any]:
        return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}

    def _paid_fields(self, trade: Trade) -> dict[str, Any]:
        yuan = bills.yuan
        paid = trade.total_fen - trade.refunded_fen
        return {
            "buyer_logon_id": trade.buyer_logon_id,
            "buyer_user_id": trade.buyer_id,
            "total_amount": yuan(trade.total_fen),
            "receipt_amount": yuan(paid),
            "buyer_pay_amount": yuan(paid),
            "invoice_amount": yuan(paid),
            "point_amount": "0.00",
            "fund_bill_list": [
                {"fund_channel": "ALIPAYACCOUNT", "amount": yuan(trade.total_fen)}
            ],
        }

    def _trade_pay(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        self._required(biz, "out_trade_no", "scene", "auth_code", "subject")
        if biz["scene"] not in ("bar_code", "wave_code"):
            raise _fail("ACQ.INVALID_PARAMETER", "参数无效：scene")
        amount = self._amount(biz)
        existing = self._find(session, biz["out_trade_no"])
        if existing is not None:
            if existing.status == "TRADE_SUCCESS":
                raise _fail("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            if existing.status == "TRADE_CLOSED":
                raise _fail("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
            if existing.paying_until is not None:
                return {
                    "code": "10003",
                    "msg": " order success pay inprocess",
                    **self._trade_fields(existing),
                }
            raise _fail("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")

        code_text = str(biz["auth_code"])
        now = self.clock.now()
        code = (
            session.get(PaymentCode, code_text)
            if CODE_PATTERN.fullmatch(code_text)
            else None
        )
        if (
            code is None
            or code.used_at is not None
            or now - code.issued_at > CODE_LIFETIME
        ):
            raise _fail(
                "ACQ.PAYMENT_AUTH_CODE_INVALID",
                "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
            )
        code.used_at = now
        payer = session.get(Payer, code.payer_id)
        assert payer is not None
        if payer.balance_fen < amount:
            raise _fail("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足")

        trade = self._new_trade(session, params, biz, visible=True)
        trade.buyer_id = payer.user_id
        trade.buyer_logon_id = _mask_logon(payer.logon_id)
        wait = payer.password_seconds or int(
            self.faults.get(CHANNEL, "user_paying_seconds", trade.out_trade_no) or 0
        )
        if wait:
            payer.password_seconds = 0
            trade.paying_until = now + dt.timedelta(seconds=wait)
            return {
                "code": "10003",
                "msg": " order success pay inprocess",
                **self._trade_fields(trade),
                "buyer_logon_id": trade.buyer_logon_id,
                "total_amount": bills.yuan(trade.total_fen),
            }
        self._settle(session, trade, payer, now)
        return _ok(
            **self._trade_fields(trade),
            **self._paid_fields(trade),
            gmt_payment=_stamp(trade.paid_at),
        )

    def _precreate(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        self._required(biz, "out_trade_no", "subject")
        trade = self._find(session, biz["out_trade_no"])
        if trade is None:
            trade = self._new_trade(session, params, biz, visible=False)
        elif trade.status == "TRADE_SUCCESS":
            raise _fail("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
        elif trade.status == "TRADE_CLOSED":
            raise _fail("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        return _ok(
            out_trade_no=trade.out_trade_no,
            qr_code=url_for("scan", token=trade.pay_token, _external=True),
        )

    def _trade_create(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        """The in-app (JSAPI) order: the page then calls the Alipay app's
        ``tradePay`` with the trade_no, which ``/cashier`` stands in for."""
        self._required(biz, "out_trade_no", "subject", "buyer_id")
        if session.get(Payer, biz["buyer_id"]) is None:
            raise _fail("ACQ.BUYER_NOT_EXIST", "买家不存在")
        trade = self._find(session, biz["out_trade_no"])
        if trade is None:
            trade = self._new_trade(session, params, biz, visible=True)
        elif trade.status != "WAIT_BUYER_PAY":
            raise _fail(
                "ACQ.TRADE_HAS_SUCCESS"
                if trade.status == "TRADE_SUCCESS"
                else "ACQ.TRADE_HAS_CLOSE",
                "交易状态不合法",
            )
        trade.buyer_id = biz["buyer_id"]
        return _ok(**self._trade_fields(trade))

    def _cashier_by_trade_no(self) -> Response:
        with self._session() as session:
            trade = self._find(session, None, request.args.get("tradeNO", ""))
            if trade is None:
                abort(404)
            return redirect(url_for("pay_page", token=trade.pay_token))

    def _cashier(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> Response:
        self._required(biz, "out_trade_no", "subject")
        trade = self._find(session, biz["out_trade_no"])
        if trade is None:
            trade = self._new_trade(session, params, biz, visible=True)
        elif trade.status != "WAIT_BUYER_PAY":
            raise _fail(
                "ACQ.TRADE_HAS_SUCCESS"
                if trade.status == "TRADE_SUCCESS"
                else "ACQ.TRADE_HAS_CLOSE",
                "交易状态不合法",
            )
        trade.visible = True
        return redirect(url_for("pay_page", token=trade.pay_token))

    def _query(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        trade = self._find(session, biz.get("out_trade_no"), biz.get("trade_no"))
        if trade is None or not trade.visible:
            raise _fail("ACQ.TRADE_NOT_EXIST", "交易不存在")
        fields: dict[str, Any] = {
            **self._trade_fields(trade),
            "trade_status": trade.status,
            "total_amount": bills.yuan(trade.total_fen),
        }
        if trade.buyer_id:
            fields.update(self._paid_fields(trade))
        if trade.paid_at is not None:
            fields["send_pay_date"] = _stamp(trade.paid_at)
        return _ok(**fields)

    def _cancel(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        trade = self._find(session, biz.get("out_trade_no"), biz.get("trade_no"))
        now = self.clock.now()
        if trade is None:
            # Nothing arrived yet (the pay request may still be on its way):
            # Alipay records the order number as closed so that a late payment
            # with it is refused.
            self._required(biz, "out_trade_no")
            trade = Trade(
                trade_no=self._trade_no(session),
                app_id=self.keys.app_id,
                out_trade_no=biz["out_trade_no"],
                method="alipay.trade.cancel",
                subject="",
                total_fen=0,
                status="TRADE_CLOSED",
                visible=False,
                pay_token=secrets.token_urlsafe(16),
                created_at=now,
                closed_at=now,
                cancel_action="close",
            )
            session.add(trade)
            return _ok(out_trade_no=trade.out_trade_no, retry_flag="N", action="close")
        if trade.status == "WAIT_BUYER_PAY":
            self._close(trade, now)
            trade.cancel_action = "close"
        elif trade.status == "TRADE_SUCCESS":
            if trade.paid_at is not None and now - trade.paid_at > CANCEL_WINDOW:
                raise _fail(
                    "ACQ.REASON_TRADE_BEYOND_TIME", "交易已超过撤销时间", retry_flag="N"
                )
            payer = session.get(Payer, trade.buyer_id)
            assert payer is not None
            rest = trade.total_fen - trade.refunded_fen
            payer.balance_fen += rest
            trade.refunded_fen = trade.total_fen
            # The money going back is a refund in the bill, like any other.
            session.add(
                Refund(
                    trade_id=trade.id,
                    out_request_no=f"CANCEL-{trade.trade_no}",
                    amount_fen=rest,
                    refunded_at=now,
                )
            )
            self._close(trade, now)
            trade.cancel_action = "refund"
        fields = {
            **self._trade_fields(trade),
            "retry_flag": "N",
            "action": trade.cancel_action or "close",
        }
        if trade.cancel_action == "refund":
            fields["gmt_refund_pay"] = _stamp(trade.closed_at)
        return _ok(**fields)

    def _close_trade(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        trade = self._find(session, biz.get("out_trade_no"), biz.get("trade_no"))
        if trade is None or not trade.visible:
            raise _fail("ACQ.TRADE_NOT_EXIST", "交易不存在")
        if trade.status != "WAIT_BUYER_PAY":
            raise _fail("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        self._close(trade, self.clock.now())
        return _ok(**self._trade_fields(trade))

    def _refund(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        trade = self._find(session, biz.get("out_trade_no"), biz.get("trade_no"))
        if trade is None or not trade.visible:
            raise _fail("ACQ.TRADE_NOT_EXIST", "交易不存在")
        amount = self._amount(biz, "refund_amount")
        request_no = str(biz.get("out_request_no") or trade.out_trade_no)
        earlier = session.scalars(
            select(Refund).where(
                Refund.trade_id == trade.id, Refund.out_request_no == request_no
            )
        ).first()
        if earlier is not None:
            if earlier.amount_fen != amount:
                raise _fail("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
            return self._refund_answer(trade, earlier, fund_change="N")
        if trade.status != "TRADE_SUCCESS":
            raise _fail("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if amount > trade.total_fen - trade.refunded_fen:
            raise _fail("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        now = self.clock.now()
        refund = Refund(
            trade_id=trade.id,
            out_request_no=request_no,
            amount_fen=amount,
            refunded_at=now,
        )
        session.add(refund)
        payer = session.get(Payer, trade.buyer_id)
        assert payer is not None
        payer.balance_fen += amount
        trade.refunded_fen += amount
        if trade.refunded_fen == trade.total_fen:
            self._close(trade, now)
        session.flush()
        self._notify(trade, refund)
        return self._refund_answer(trade, refund, fund_change="Y")

    def _refund_answer(
        self, trade: Trade, refund: Refund, fund_change: str
    ) -> dict[str, Any]:
        return _ok(
            **self._trade_fields(trade),
            buyer_logon_id=trade.buyer_logon_id,
            buyer_user_id=trade.buyer_id,
            fund_change=fund_change,
            refund_fee=bills.yuan(trade.refunded_fen),
            send_back_fee=bills.yuan(refund.amount_fen),
            gmt_refund_pay=_stamp(refund.refunded_at),
        )

    def _refund_query(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        self._required(biz, "out_request_no")
        trade = self._find(session, biz.get("out_trade_no"), biz.get("trade_no"))
        if trade is None or not trade.visible:
            raise _fail("ACQ.TRADE_NOT_EXIST", "交易不存在")
        refund = session.scalars(
            select(Refund).where(
                Refund.trade_id == trade.id,
                Refund.out_request_no == biz["out_request_no"],
            )
        ).first()
        if refund is None:
            # Alipay answers an unknown refund with success and no refund fields.
            return _ok(**self._trade_fields(trade))
        return _ok(
            **self._trade_fields(trade),
            out_request_no=refund.out_request_no,
            total_amount=bills.yuan(trade.total_fen),
            refund_amount=bills.yuan(refund.amount_fen),
            refund_status="REFUND_SUCCESS",
            gmt_refund_pay=_stamp(refund.refunded_at),
        )

    # -- bills ----------------------------------------------------------------------

    def _bill_url(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        if biz.get("bill_type") != "trade":
            raise _fail("isv.invalid-bill-type", "账单类型错误", code="40002")
        try:
            day = dt.date.fromisoformat(str(biz.get("bill_date")))
        except ValueError as error:
            raise _fail(
                "isv.invalid-bill-date", "账单日期格式错误", code="40002"
            ) from error
        if day >= self.clock.now().astimezone(SHANGHAI).date():
            raise _fail("isp.bill_not_exist", "账单不存在")
        expires = int((self.clock.now() + BILL_URL_LIFETIME).timestamp())
        query = {
            "bizType": "trade",
            "userId": self.keys.seller_id,
            "fileType": "csv.zip",
            "bizDates": f"{day:%Y%m%d}",
            "downloadFileName": f"{self.keys.seller_id}_{day:%Y%m%d}.csv.zip",
            "timestamp": str(expires),
        }
        query["token"] = self._bill_token(query)
        url = url_for("bill_file", _external=True) + "?" + urlencode(query)
        return _ok(bill_download_url=url)

    def _bill_token(self, query: dict[str, str]) -> str:
        text = "&".join(f"{k}={v}" for k, v in sorted(query.items()) if k != "token")
        return hmac.new(self._bill_secret, text.encode(), hashlib.sha256).hexdigest()

    def _bill_file(self) -> Response:
        query = dict(request.args)
        token = query.get("token", "")
        if not hmac.compare_digest(token, self._bill_token(query)):
            abort(403)
        if int(query.get("timestamp", "0")) < self.clock.now().timestamp():
            abort(403)
        day = (
            dt.datetime.strptime(query["bizDates"], "%Y%m%d")
            .replace(tzinfo=SHANGHAI)
            .date()
        )
        name, content = self.bill(day)
        return Response(
            content,
            content_type="application/oct-stream",
            headers={"Content-Disposition": f"attachment; filename={name}"},
        )

    def bill(self, day: dt.date) -> tuple[str, bytes]:
        """The day's bill zip, with the bill faults applied."""
        with self._session() as session:
            lines = sorted(
                self._bill_lines(session, day), key=lambda line: line.finished_at
            )
        return bills.build_zip(
            seller_id=self.keys.seller_id,
            day=day,
            lines=lines,
            exported_at=self.clock.now(),
        )

    def _bill_lines(self, session: Session, day: dt.date) -> Iterator[bills.BillLine]:
        start = dt.datetime.combine(day, dt.time(), SHANGHAI)
        window = (start - dt.timedelta(days=1), start + dt.timedelta(days=1))
        paid = session.scalars(
            select(Trade).where(
                Trade.paid_at.is_not(None),
                Trade.paid_at >= window[0],
                Trade.paid_at < window[1],
            )
        )
        for trade in paid:
            out = trade.out_trade_no
            assert trade.paid_at is not None
            finished = trade.paid_at
            if self.faults.get(CHANNEL, "bill_after_midnight", out):
                local = finished.astimezone(SHANGHAI)
                finished = dt.datetime.combine(
                    local.date() + dt.timedelta(days=1), dt.time(0, 0, 7), SHANGHAI
                )
            if finished.astimezone(SHANGHAI).date() != day:
                continue
            if self.faults.get(CHANNEL, "bill_missing_line", out):
                continue
            amount = trade.total_fen + int(
                self.faults.get(CHANNEL, "bill_amount_delta_fen", out) or 0
            )
            yield bills.BillLine(
                trade_no=trade.trade_no,
                out_trade_no=out,
                kind="交易",
                subject=trade.subject,
                created_at=trade.created_at,
                finished_at=finished,
                buyer_account=trade.buyer_logon_id or "",
                amount_fen=amount,
                received_fen=amount,
                fee_fen=bills.service_fee_fen(amount),
            )
        refunds = session.execute(
            select(Refund, Trade)
            .join(Trade, Refund.trade_id == Trade.id)
            .where(
                Refund.refunded_at >= start,
                Refund.refunded_at < start + dt.timedelta(days=1),
            )
        )
        for refund, trade in refunds:
            yield bills.BillLine(
                trade_no=trade.trade_no,
                out_trade_no=trade.out_trade_no,
                kind="退款",
                subject=trade.subject,
                created_at=trade.created_at,
                finished_at=refund.refunded_at,
                buyer_account=trade.buyer_logon_id or "",
                amount_fen=-refund.amount_fen,
                received_fen=-refund.amount_fen,
                fee_fen=bills.service_fee_fen(-refund.amount_fen),
                out_request_no=refund.out_request_no,
            )

    # -- user authorisation -----------------------------------------------------------

    def _authorize(self) -> Response | str:
        app_id = request.values.get("app_id", "")
        redirect_uri = request.values.get("redirect_uri", "")
        scope = request.values.get("scope", "auth_base")
        state = request.values.get("state", "")
        if app_id != self.keys.app_id or not redirect_uri.startswith(
            ("http://", "https://")
        ):
            return self._error_page(
                {
                    "code": "40002",
                    "sub_code": "isv.invalid-app-id",
                    "sub_msg": "无效的应用或回调地址",
                }
            )
        if request.method == "POST":
            payer_id = request.form.get("payer_id", "")
            code = secrets.token_hex(16)
            with self._session() as session:
                try:
                    payer_id = self._payer(session, payer_id).user_id
                except KeyError:
                    abort(400)
                session.add(
                    AuthCode(
                        code=code,
                        payer_id=payer_id,
                        app_id=app_id,
                        issued_at=self.clock.now(),
                    )
                )
            query = {
                "app_id": app_id,
                "source": "alipay_wallet",
                "scope": scope,
                "auth_code": code,
            }
            if state:
                query["state"] = state
            separator = "&" if "?" in redirect_uri else "?"
            return redirect(redirect_uri + separator + urlencode(query))
        return render_template(
            "alipay/authorize.html", payers=self.payers(), scope=scope
        )

    def _oauth_token(
        self, session: Session, params: dict[str, str], biz: dict[str, Any]
    ) -> dict[str, Any]:
        grant = params.get("grant_type")
        code = (
            session.get(AuthCode, params.get("code", ""))
            if grant == "authorization_code"
            else None
        )
        now = self.clock.now()
        if code is None or code.used or now - code.issued_at > dt.timedelta(minutes=5):
            return {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": "isv.code-invalid",
                "sub_msg": "授权码code无效",
            }
        code.used = True
        return {
            "user_id": code.payer_id,
            "alipay_user_id": code.payer_id,
            "access_token": "authbseB" + secrets.token_hex(16),
            "expires_in": 1296000,
            "refresh_token": "authbseB" + secrets.token_hex(16),
            "re_expires_in": 2592000,
            "auth_start": _stamp(now),
        }

    # -- the payer page ---------------------------------------------------------------

    @staticmethod
    def _by_token(session: Session, token: str) -> Trade:
        trade = session.scalars(select(Trade).where(Trade.pay_token == token)).first()
        if trade is None:
            abort(404)
        return trade

    def _scan(self, token: str) -> Response:
        with self._session() as session:
            trade = self._by_token(session, token)
            trade.visible = True
        return redirect(url_for("pay_page", token=token))

    def _pay_page(self, token: str) -> Response | str:
        message = ""
        with self._session() as session:
            self._advance(session)
            trade = self._by_token(session, token)
            trade.visible = True
            if request.method == "POST" and trade.status == "WAIT_BUYER_PAY":
                if request.form.get("action") == "cancel":
                    logger.info(
                        "sandbox_alipay_payer_cancelled",
                        extra={"out_trade_no": trade.out_trade_no},
                    )
                    if trade.quit_url:
                        return redirect(trade.quit_url)
                    message = "cancelled"
                else:
                    try:
                        payer = self._payer(session, request.form.get("payer_id", ""))
                    except KeyError:
                        abort(400)
                    if payer.balance_fen < trade.total_fen:
                        message = "balance"
                    else:
                        self._settle(session, trade, payer, self.clock.now())
                        if trade.return_url:
                            return redirect(self._return_url(trade))
            view = {
                "subject": trade.subject,
                "out_trade_no": trade.out_trade_no,
                "amount": bills.yuan(trade.total_fen),
                "status": trade.status,
                "return_url": self._return_url(trade) if trade.return_url else "",
            }
        return render_template(
            "alipay/pay.html", trade=view, payers=self.payers(), message=message
        )

    def _return_url(self, trade: Trade) -> str:
        """The merchant's return URL with Alipay's signed synchronous parameters."""
        assert trade.return_url
        params = {
            "charset": "utf-8",
            "out_trade_no": trade.out_trade_no,
            "method": trade.method + ".return",
            "total_amount": bills.yuan(trade.total_fen),
            "trade_no": trade.trade_no,
            "auth_app_id": self.keys.app_id,
            "version": "1.0",
            "app_id": self.keys.app_id,
            "sign_type": "RSA2",
            "seller_id": self.keys.seller_id,
            "timestamp": _stamp(self.clock.now()),
        }
        params["sign"] = signing.sign(
            self._alipay_private, signing.notification_content(params)
        )
        separator = "&" if "?" in trade.return_url else "?"
        return trade.return_url + separator + urlencode(params)

    # -- control API -------------------------------------------------------------------

    def _control_faults(self) -> Response:
        if request.method == "POST":
            body = request.get_json(force=True)
            self.faults.set(
                CHANNEL,
                str(body["name"]),
                body.get("value"),
                str(body.get("out_trade_no") or "*"),
            )
        elif request.method == "DELETE":
            self.faults.clear(CHANNEL)
        return _json([f for f in self.faults.snapshot() if f["channel"] == CHANNEL])

    def _control_payers(self) -> Response:
        return _json(self.payers())

    def _control_payer(self, payer_id: str) -> Response:
        try:
            if request.method == "POST":
                body = request.get_json(force=True)
                if "password_seconds" in body:
                    self.set_password_needed(payer_id, int(body["password_seconds"]))
                if "balance_fen" in body:
                    self.set_balance(payer_id, int(body["balance_fen"]))
            code = self.current_code(payer_id)
        except KeyError:
            abort(404)
        payer = next(p for p in self.payers() if payer_id in (p["id"], p["user_id"]))
        return _json({**payer, "code": code})

    def _control_trade(self, out_trade_no: str) -> Response:
        trade = self.trade(out_trade_no)
        if trade is None:
            abort(404)
        return _json(trade)

    def _control_release(self) -> Response:
        """Send the notification a ``reorder`` fault is holding back."""
        held = len(self._held)
        self.release_held_notifications()
        return _json({"released": held})


def _json(value: Any) -> Response:
    return Response(
        json.dumps(value, ensure_ascii=False), content_type="application/json"
    )
