"""``WechatChannel``: WeChat Pay API v3 behind our ``Channel`` interface.

Every call goes through wechatpayv3 (``client``), in platform-public-key or
platform-certificate mode. Beyond the SDK, this adapter:

- refuses notifications stamped more than 5 minutes from our clock;
- refuses a notification id already accepted (``payments.channels.received``);
  the caller records acceptance with ``remember_accepted`` in the transaction
  that acts on it;
- checks a bill's SHA1 ``hash_value`` and never sends our signed download
  request anywhere but our gateway;
- treats an answer without a valid signature as forged, an error answer too
  (``client``): an unsigned ``ORDER_NOT_EXIST`` is never "no such order".

Amounts are fen on both sides (WeChat Pay v3 counts in fen too); times from
WeChat Pay are RFC 3339 with +08:00.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import requests
from flask import Flask
from wechatpayv3 import WeChatPay, WeChatPayType

from campus.logs import mask_code
from payments.channels.base import (
    BadNotificationSignature,
    Bill,
    Channel,
    ChannelName,
    ChannelRejected,
    ChannelUnavailable,
    Checkout,
    DuplicateNotification,
    ForgedResponse,
    MalformedNotification,
    Notification,
    NotificationKind,
    OrderRequest,
    PayerContext,
    PayerKind,
    PaymentResult,
    RefundRequest,
    RefundResult,
    RefundState,
    ReverseResult,
    StaleNotification,
    TradeState,
)
from payments.channels.wechat import client as sdk
from payments.channels.wechat.client import Unverified
from payments.channels.wechat.config import WechatConfig

logger = logging.getLogger(__name__)

ZONE = ZoneInfo("Asia/Shanghai")

TRADE_STATES = {
    "SUCCESS": TradeState.SUCCEEDED,
    "REFUND": TradeState.REFUNDED,
    "NOTPAY": TradeState.PAYING,
    "USERPAYING": TradeState.PAYING,
    "CLOSED": TradeState.CLOSED,
    "REVOKED": TradeState.REVERSED,
    "PAYERROR": TradeState.FAILED,
}
REFUND_STATES = {
    "SUCCESS": RefundState.SUCCEEDED,
    "PROCESSING": RefundState.PROCESSING,
    "CLOSED": RefundState.CLOSED,
    "ABNORMAL": RefundState.ABNORMAL,
}
PAY_TYPES = {
    PayerKind.JSAPI: WeChatPayType.JSAPI,
    PayerKind.H5: WeChatPayType.H5,
    PayerKind.NATIVE: WeChatPayType.NATIVE,
    PayerKind.APP: WeChatPayType.APP,
}
NOTIFICATION_HEADERS = (
    "Wechatpay-Signature",
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
)


class DamagedBill(ChannelUnavailable):
    """The downloaded bill does not match the ``hash_value`` WeChat Pay gave for
    it (or cannot be unpacked): download it again."""


def _already_accepted_in_db(notification_id: str) -> bool:
    from campus.database import db
    from payments.channels.received import already_accepted

    return already_accepted(db.session(), ChannelName.WECHAT, notification_id)


class WechatChannel(Channel):
    name = ChannelName.WECHAT

    def __init__(
        self,
        config: WechatConfig,
        *,
        now: Callable[[], dt.datetime] | None = None,
        already_accepted: Callable[[str], bool] = _already_accepted_in_db,
    ) -> None:
        """``now`` is our clock for notification freshness (tests pass the
        sandbox's); ``already_accepted`` answers whether a notification id was
        accepted before (default: the ``received_notifications`` table)."""
        self.config = config
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._already_accepted = already_accepted
        self._client: WeChatPay | None = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_app(cls, app: Flask, **options: Any) -> WechatChannel:
        """The channel as the app's settings configure it."""
        return cls(
            WechatConfig.from_settings(app.extensions["campus.settings"]), **options
        )

    @property
    def client(self) -> WeChatPay:
        # Built on first use: in certificate mode building it downloads the
        # platform certificates, which should not happen at import or app start.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = sdk.build_client(self.config)
        return self._client

    # -- orders ---------------------------------------------------------------

    def create_order(self, order: OrderRequest, payer: PayerContext) -> Checkout:
        pay_type = PAY_TYPES.get(payer.kind)
        if pay_type is None:
            raise ValueError(f"WeChat Pay has no {payer.kind} orders")
        extra: dict[str, Any] = {}
        if payer.kind == PayerKind.JSAPI:
            if not payer.openid:
                raise ValueError("a JSAPI order needs the payer's openid")
            extra["payer"] = {"openid": payer.openid}
        if payer.kind == PayerKind.H5:
            extra["scene_info"] = {
                "payer_client_ip": payer.client_ip,
                "h5_info": {"type": "Wap"},
            }
        if order.expires_at is not None:
            extra["time_expire"] = _rfc3339(order.expires_at)
        _, body = sdk.call(
            "create_order",
            self.client.pay,
            order=order.out_trade_no,
            out_trade_no=order.out_trade_no,
            description=order.description,
            amount={"total": order.amount_fen, "currency": "CNY"},
            notify_url=order.notify_url,
            attach=order.attach,
            pay_type=pay_type,
            **extra,
        )
        data = _json(body, "create_order", order.out_trade_no)
        if payer.kind == PayerKind.NATIVE:
            return Checkout(
                kind=payer.kind, qr_content=_need(data, "code_url"), raw=data
            )
        if payer.kind == PayerKind.H5:
            url = _need(data, "h5_url")
            if payer.return_url:
                # WeChat's H5 cashier sends the browser back to redirect_url.
                url += "&" + urlencode({"redirect_url": payer.return_url})
            return Checkout(kind=payer.kind, redirect_url=url, raw=data)
        prepay_id = _need(data, "prepay_id")
        stamp, nonce = str(int(time.time())), secrets.token_hex(16)
        if payer.kind == PayerKind.APP:
            params = {
                "appid": self.config.appid,
                "partnerid": self.config.mchid,
                "prepayid": prepay_id,
                "package": "Sign=WXPay",
                "noncestr": nonce,
                "timestamp": stamp,
            }
            params["sign"] = self.client.sign(
                [self.config.appid, stamp, nonce, prepay_id]
            )
            return Checkout(kind=payer.kind, raw=data | {"app_params": params})
        package = f"prepay_id={prepay_id}"
        jsapi = {
            "appId": self.config.appid,
            "timeStamp": stamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": self.client.sign([self.config.appid, stamp, nonce, package]),
        }
        raw = dict(data)
        if self.config.sandbox:
            # No WeixinJSBridge outside the WeChat app: in the sandbox a page
            # sends the browser here instead, with the same signed parameters.
            root = self.config.gateway_url.removesuffix("/wechat")
            query = urlencode(
                jsapi | ({"redirect_url": payer.return_url} if payer.return_url else {})
            )
            raw["sandbox_cashier_url"] = f"{root}/pay/wechat/jsapi?{query}"
        return Checkout(kind=payer.kind, jsapi_params=jsapi, raw=raw)

    def pay_with_code(self, order: OrderRequest, payment_code: str) -> PaymentResult:
        logger.info(
            "wechat_codepay",
            extra={"out_trade_no": order.out_trade_no, "code": mask_code(payment_code)},
        )
        status, body = sdk.call(
            "pay_with_code",
            self.client.pay,
            order=order.out_trade_no,
            out_trade_no=order.out_trade_no,
            description=order.description,
            amount={"total": order.amount_fen, "currency": "CNY"},
            payer={"auth_code": payment_code},
            scene_info={"store_info": {"out_id": self.config.store_id}},
            attach=order.attach,
            pay_type=WeChatPayType.CODEPAY,
        )
        data = _json(body, "pay_with_code", order.out_trade_no)
        if status == 202 or data.get("code") == "USERPAYING":
            # The payer is typing the password: only a query will tell.
            return PaymentResult(
                out_trade_no=order.out_trade_no,
                state=TradeState.PAYING,
                amount_fen=order.amount_fen,
                error_code="USERPAYING",
                error_message=data.get("message"),
                raw=data,
            )
        return self._payment(data, order.out_trade_no)

    def query(self, out_trade_no: str) -> PaymentResult:
        _, body = sdk.call(
            "query",
            self.client.query,
            out_trade_no=out_trade_no,
            order=out_trade_no,
            accept={"ORDER_NOT_EXIST"},
        )
        data = _json(body, "query", out_trade_no)
        if data.get("code") == "ORDER_NOT_EXIST":
            return PaymentResult(
                out_trade_no,
                TradeState.NOT_FOUND,
                error_code="ORDER_NOT_EXIST",
                raw=data,
            )
        return self._payment(data, out_trade_no)

    def query_by_transaction_id(self, transaction_id: str) -> PaymentResult:
        """The order WeChat Pay knows by its own id (reconciliation's other key)."""
        _, body = sdk.call("query", self.client.query, transaction_id=transaction_id)
        data = _json(body, "query", None)
        return self._payment(data, _need(data, "out_trade_no"))

    def close(self, out_trade_no: str) -> None:
        _, body = sdk.call(
            "close",
            self.client.close,
            out_trade_no,
            order=out_trade_no,
            accept={"ORDER_NOT_EXIST"},
        )
        if isinstance(body, dict) and body.get("code") == "ORDER_NOT_EXIST":
            # Never reached WeChat Pay: there is nothing that could be paid.
            logger.info(
                "wechat_close_unknown_order", extra={"out_trade_no": out_trade_no}
            )

    def reverse(self, out_trade_no: str) -> ReverseResult:
        _, body = sdk.call(
            "reverse",
            self.client.codepay_reverse,
            out_trade_no,
            order=out_trade_no,
            accept={"ORDER_NOT_EXIST", "USERPAYING"},
        )
        data = body if isinstance(body, dict) else {}
        if data.get("code") == "USERPAYING":
            return ReverseResult(out_trade_no, done=False, retry=True, raw=data)
        return ReverseResult(out_trade_no, done=True, retry=False, raw=data)

    # -- refunds --------------------------------------------------------------

    def refund(self, refund: RefundRequest) -> RefundResult:
        _, body = sdk.call(
            "refund",
            self.client.refund,
            order=refund.out_trade_no,
            out_refund_no=refund.out_refund_no,
            amount={
                "refund": refund.refund_fen,
                "total": refund.total_fen,
                "currency": "CNY",
            },
            out_trade_no=refund.out_trade_no,
            reason=refund.reason,
            notify_url=refund.notify_url,
        )
        return self._refund(_json(body, "refund", refund.out_trade_no))

    def query_refund(self, out_refund_no: str, out_trade_no: str) -> RefundResult:
        _, body = sdk.call(
            "query_refund",
            self.client.query_refund,
            out_refund_no,
            order=out_trade_no,
            accept={"RESOURCE_NOT_EXISTS"},
        )
        data = _json(body, "query_refund", out_trade_no)
        if data.get("code") == "RESOURCE_NOT_EXISTS":
            return RefundResult(
                out_refund_no,
                RefundState.NOT_FOUND,
                out_trade_no=out_trade_no,
                raw=data,
            )
        result = self._refund(data)
        if result.out_trade_no != out_trade_no:
            raise ChannelUnavailable(
                "WeChat Pay answered about another order's refund",
                channel=self.name,
                out_trade_no=out_trade_no,
            )
        return result

    # -- notifications --------------------------------------------------------

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> Notification:
        lower = {key.lower(): value for key, value in headers.items()}
        signed = {
            name: lower[name.lower()]
            for name in NOTIFICATION_HEADERS
            if name.lower() in lower
        }
        try:
            text = body.decode()
        except UnicodeDecodeError as error:
            raise MalformedNotification(
                "body is not UTF-8", channel=self.name
            ) from error
        try:
            stamp = int(signed.get("Wechatpay-Timestamp", ""))
        except ValueError:
            raise BadNotificationSignature(
                "no Wechatpay-Timestamp: not a signed notification", channel=self.name
            ) from None

        # Outside the try below: a client that cannot be built (certificates out
        # of reach) is the channel being unavailable, not a bad notification.
        client = self.client
        try:
            event = client.callback(signed, text)
        except Unverified as error:
            logger.warning(
                "wechat_notification_bad_signature",
                extra={"serial": signed.get("Wechatpay-Serial")},
            )
            raise BadNotificationSignature(
                f"notification signature: {error}", channel=self.name
            ) from error
        except requests.RequestException as error:
            # Fetching certificates for an unknown serial failed: we cannot tell,
            # so WeChat Pay must try again later.
            raise BadNotificationSignature(
                "cannot verify now: platform certificates unavailable",
                channel=self.name,
            ) from error
        except Exception as error:
            # The SDK raises bare exceptions for bodies it cannot read.
            raise MalformedNotification(
                f"unreadable notification: {error}", channel=self.name
            ) from error

        # Verified and decrypted by now, so a refusal below can name the order:
        # whoever looks into it next starts from the order, not from the raw body.
        resource = event.get("resource") if isinstance(event, dict) else None
        named = resource.get("out_trade_no") if isinstance(resource, dict) else None
        named = named if isinstance(named, str) else None
        skew = abs(self._now().timestamp() - stamp)
        if skew > self.config.notification_max_skew_seconds:
            logger.warning(
                "wechat_notification_stale",
                extra={
                    "skew_seconds": skew,
                    "out_trade_no": named,
                    "notification_id": event.get("id") if event else None,
                },
            )
            raise StaleNotification(
                f"notification stamped {int(skew)} s away from our clock",
                channel=self.name,
                out_trade_no=named,
            )
        if not event or not isinstance(event.get("resource"), dict):
            raise MalformedNotification(
                "notification resource does not decrypt with our APIv3 key",
                channel=self.name,
            )
        notification_id = str(event.get("id", ""))
        if not notification_id:
            raise MalformedNotification(
                "notification without id", channel=self.name, out_trade_no=named
            )
        resource, out_trade_no = event["resource"], named
        if self._already_accepted(notification_id):
            logger.info(
                "wechat_notification_duplicate",
                extra={
                    "notification_id": notification_id,
                    "out_trade_no": out_trade_no,
                },
            )
            raise DuplicateNotification(
                "notification already accepted",
                channel=self.name,
                out_trade_no=out_trade_no,
            )
        try:
            created_at = dt.datetime.fromisoformat(event["create_time"])
            kind = str(event["event_type"])
            if kind.startswith("TRANSACTION."):
                return Notification(
                    channel=self.name,
                    notification_id=notification_id,
                    kind=NotificationKind.PAYMENT,
                    created_at=created_at,
                    merchant_id=str(resource["mchid"]),
                    payment=self._payment(resource, str(resource["out_trade_no"])),
                    raw=event,
                )
            if kind.startswith("REFUND."):
                return Notification(
                    channel=self.name,
                    notification_id=notification_id,
                    kind=NotificationKind.REFUND,
                    created_at=created_at,
                    merchant_id=str(resource["mchid"]),
                    refund=self._refund(resource),
                    raw=event,
                )
        except (KeyError, ValueError, TypeError, ChannelUnavailable) as error:
            raise MalformedNotification(
                f"notification resource incomplete: {error}",
                channel=self.name,
                out_trade_no=out_trade_no,
            ) from error
        raise MalformedNotification(
            f"unknown event_type {kind}", channel=self.name, out_trade_no=out_trade_no
        )

    def notification_ack(self, accepted: bool) -> tuple[bytes, int, dict[str, str]]:
        if accepted:
            return b"", 204, {}
        body = json.dumps({"code": "FAIL", "message": "失败"}, ensure_ascii=False)
        return body.encode(), 500, {"Content-Type": "application/json"}

    # -- bills ----------------------------------------------------------------

    def download_bill(self, day: dt.date) -> Bill:
        _, body = sdk.call(
            "trade_bill",
            self.client.trade_bill,
            bill_date=day.isoformat(),
            bill_type="ALL",
            tar_type="GZIP",
        )
        data = _json(body, "trade_bill", None)
        url, expected = _need(data, "download_url"), _need(data, "hash_value")
        if data.get("hash_type") != "SHA1":
            raise ChannelUnavailable(
                f"unknown bill hash_type {data.get('hash_type')}", channel=self.name
            )
        if not url.startswith(self.config.gateway_url + "/"):
            # The SDK would sign a request to whatever address it is given.
            raise ForgedResponse(
                "bill download_url is not on our WeChat Pay gateway", channel=self.name
            )
        _, packed = sdk.call("download_bill", self.client.download_bill, url)
        if not isinstance(packed, bytes):
            packed = json.dumps(packed).encode()
        try:
            content = gzip.decompress(packed)
        except (OSError, EOFError, zlib.error) as error:
            raise DamagedBill(
                "the bill download is not a whole gzip file", channel=self.name
            ) from error
        actual = hashlib.sha1(content).hexdigest()
        if not hmac.compare_digest(actual, expected.lower()):
            logger.error("wechat_bill_hash_mismatch", extra={"day": day.isoformat()})
            raise DamagedBill(
                f"bill of {day} does not match its hash_value", channel=self.name
            )
        return Bill(
            channel=self.name,
            day=day,
            content=content,
            filename=f"wechat-tradebill-{day.isoformat()}.csv",
            sha256=hashlib.sha256(content).hexdigest(),
        )

    # -- web OAuth ------------------------------------------------------------

    def authorize_url(
        self, redirect_uri: str, state: str, scope: str = "snsapi_base"
    ) -> str:
        """Where to send a browser inside WeChat to learn the payer's openid; it
        comes back to ``redirect_uri`` with ``code`` and ``state``."""
        query = urlencode(
            {
                "appid": self.config.appid,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": scope,
                "state": state,
            }
        )
        return f"{self.config.oauth_authorize_url}?{query}#wechat_redirect"

    def openid_for_code(self, code: str) -> str:
        """Exchange the OAuth ``code`` for the payer's openid."""
        try:
            response = requests.get(
                f"{self.config.oauth_api_url}/sns/oauth2/access_token",
                params={
                    "appid": self.config.appid,
                    "secret": self.config.app_secret,
                    "code": code,
                    "grant_type": "authorization_code",
                },
                timeout=(
                    min(5.0, self.config.timeout_seconds),
                    self.config.timeout_seconds,
                ),
            )
            answer = response.json()
        except (requests.RequestException, ValueError) as error:
            raise ChannelUnavailable(
                "WeChat OAuth did not answer", channel=self.name
            ) from error
        if not isinstance(answer, dict) or response.status_code >= 500:
            raise ChannelUnavailable(
                "WeChat OAuth answer unreadable", channel=self.name
            )
        if answer.get("errcode"):
            error_class = (
                ChannelUnavailable if answer["errcode"] == -1 else ChannelRejected
            )
            raise error_class(
                f"WeChat OAuth refused the code: {answer.get('errmsg')}",
                channel=self.name,
                error_code=str(answer["errcode"]),
            )
        openid = answer.get("openid")
        if not isinstance(openid, str) or not openid:
            raise ChannelUnavailable("WeChat OAuth gave no openid", channel=self.name)
        return openid

    # -- answers --------------------------------------------------------------

    def _payment(self, data: Mapping[str, Any], out_trade_no: str) -> PaymentResult:
        if data.get("out_trade_no") != out_trade_no:
            raise ChannelUnavailable(
                "WeChat Pay answered about another order",
                channel=self.name,
                out_trade_no=out_trade_no,
            )
        state = TRADE_STATES.get(str(data.get("trade_state")))
        if state is None:
            raise ChannelUnavailable(
                f"unknown trade_state {data.get('trade_state')}",
                channel=self.name,
                out_trade_no=out_trade_no,
            )
        amount = data.get("amount") or {}
        success_time = data.get("success_time")
        return PaymentResult(
            out_trade_no=out_trade_no,
            state=state,
            transaction_id=data.get("transaction_id"),
            amount_fen=_fen(amount.get("total")),
            payer_id=(data.get("payer") or {}).get("openid"),
            paid_at=dt.datetime.fromisoformat(success_time) if success_time else None,
            error_code=str(data["trade_state"])
            if state in (TradeState.FAILED, TradeState.REVERSED, TradeState.CLOSED)
            else None,
            error_message=data.get("trade_state_desc"),
            raw=data,
        )

    def _refund(self, data: Mapping[str, Any]) -> RefundResult:
        status = str(data.get("status") or data.get("refund_status"))
        state = REFUND_STATES.get(status)
        if state is None:
            raise ChannelUnavailable(
                f"unknown refund status {status}", channel=self.name
            )
        amount = data.get("amount") or {}
        return RefundResult(
            out_refund_no=str(data["out_refund_no"]),
            state=state,
            refund_id=data.get("refund_id"),
            amount_fen=_fen(amount.get("refund")),
            out_trade_no=data.get("out_trade_no"),
            raw=data,
        )


def _rfc3339(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("expires_at must be aware")
    return moment.astimezone(ZONE).isoformat(timespec="seconds")


def _fen(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json(body: Any, operation: str, out_trade_no: str | None) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    raise ChannelUnavailable(
        f"WeChat Pay's answer to {operation} is not JSON",
        channel=ChannelName.WECHAT,
        out_trade_no=out_trade_no,
    )


def _need(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ChannelUnavailable(
            f"WeChat Pay's answer lacks {name}", channel=ChannelName.WECHAT
        )
    return value
