"""The Alipay channel over python-alipay-sdk (``alipay.AliPay``, RSA2 keys).

The SDK signs requests and checks answers' signatures; this adapter closes its
gaps:

- it never looks at ``code``: we check it (10000 done, 10003 the payer is entering
  a password, 20000 unavailable, 40004 rejected with a ``sub_code``);
- its ``verify()`` pops ``sign_type`` and rewrites nested values in the dict it is
  given: it only ever gets a copy;
- it stamps requests with the process's local time: ours are Asia/Shanghai,
  whatever ``TZ`` says;
- it neither deduplicates notifications nor looks at their age: we refuse a
  ``notify_id`` already accepted (``payments.channels.received``) and a
  ``notify_time`` further than ``notification_skew_seconds`` from our clock;
- it lets an unsigned or ``error_response`` answer through as a bare exception:
  we verify a signed one ourselves and treat an unsigned one as forged.

Errors are translated in two places only: ``_translated`` for exceptions (SDK,
HTTP, JSON) and ``_checked`` for Alipay's answer codes::

    timeout, connection, HTTP 5xx, 20000, ACQ.SYSTEM_ERROR  → AlipayUnavailable
    40001, 40002, 40004 (other sub_codes)                    → AlipayRejected
    bad or missing signature on an answer                     → ForgedResponse
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import io
import json
import logging
import time
import urllib.error
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import requests
from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig
from sqlalchemy.orm import Session

from campus.errors import InvalidAmount
from campus.logs import mask_code
from payments.channels.alipay.config import AlipayConfig
from payments.channels.base import (
    BadNotificationSignature,
    Bill,
    Channel,
    ChannelError,
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
from payments.channels.received import already_accepted
from payments.money import format_yuan, parse_fen

logger = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
STAMP = "%Y-%m-%d %H:%M:%S"
CHANNEL = ChannelName.ALIPAY.value

# Sub-codes that say "the outcome is unknown, ask again" rather than "no".
UNAVAILABLE_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "isp.unknow-error"})

TRADE_STATES = {
    "WAIT_BUYER_PAY": TradeState.PAYING,
    "TRADE_SUCCESS": TradeState.SUCCEEDED,
    "TRADE_FINISHED": TradeState.SUCCEEDED,
    "TRADE_CLOSED": TradeState.CLOSED,
}


class _AlipayAnswerError(ChannelError):
    """Carries Alipay's ``code`` and the verified answer, when there was one."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        response: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, channel=CHANNEL, **kwargs)
        self.code = code
        self.response = dict(response or {})


class AlipayUnavailable(_AlipayAnswerError, ChannelUnavailable):
    """No answer, or an answer that says Alipay could not decide."""


class AlipayRejected(_AlipayAnswerError, ChannelRejected):
    """A signed business refusal; ``error_code`` is Alipay's ``sub_code``."""

    @property
    def sub_code(self) -> str | None:
        return self.error_code


class _UnverifiedAnswer(Exception):
    """An answer the SDK would not verify: unsigned, or an ``error_response``."""

    def __init__(self, raw: str, response_type: str) -> None:
        super().__init__(response_type)
        self.raw = raw
        self.response_type = response_type


class _CampusAliPay(AliPay):  # type: ignore[misc]  # the SDK has no type hints
    """``AliPay`` with Shanghai timestamps and unverified answers kept whole."""

    def __init__(self, config: AlipayConfig, clock: Callable[[], dt.datetime]) -> None:
        super().__init__(
            appid=config.app_id,
            app_private_key_string=config.app_private_key,
            alipay_public_key_string=config.alipay_public_key,
            sign_type="RSA2",
            config=AliPayConfig(timeout=config.timeout_seconds),
        )
        # The SDK keeps its gateway in a private attribute; the version is pinned
        # in pyproject.toml for this reason.
        self._gateway = config.gateway_url
        self._clock = clock

    def build_body(
        self, method: str, biz_content: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        data: dict[str, Any] = super().build_body(method, biz_content, **kwargs)
        # The SDK uses datetime.now(): the server's local time, which Alipay
        # reads as Beijing time.
        data["timestamp"] = self._clock().astimezone(SHANGHAI).strftime(STAMP)
        return data

    def _verify_and_return_sync_response(
        self, raw_string: str, response_type: str
    ) -> Any:
        try:
            return super()._verify_and_return_sync_response(raw_string, response_type)
        except (AliPayException, AttributeError) as error:
            raise _UnverifiedAnswer(raw_string, response_type) from error


class AlipayChannel(Channel):
    """Alipay through python-alipay-sdk; see the module docstring."""

    name = ChannelName.ALIPAY

    def __init__(
        self,
        config: AlipayConfig,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        session_factory: Callable[[], Session] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._session_factory = session_factory
        self._sdk = _CampusAliPay(config, self._clock)

    @classmethod
    def from_app(
        cls,
        app: Any,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        session_factory: Callable[[], Session] | None = None,
    ) -> AlipayChannel:
        """The channel as the app's settings configure it; ``clock`` is the
        sandbox's when it is mounted, so that moving its time moves ours."""
        config = AlipayConfig.from_settings(app.extensions["campus.settings"])
        return cls(config, clock=clock, session_factory=session_factory)

    # -- orders -------------------------------------------------------------------

    def create_order(self, order: OrderRequest, payer: PayerContext) -> Checkout:
        extra = self._order_extras(order)
        amount = format_yuan(order.amount_fen)
        out = order.out_trade_no
        if payer.kind == PayerKind.PRECREATE:
            with self._translated("precreate", out):
                answer = self._sdk.api_alipay_trade_precreate(
                    order.description, out, amount, notify_url=order.notify_url, **extra
                )
            answer = self._checked(answer, "precreate", out)
            return Checkout(kind=payer.kind, qr_content=answer["qr_code"], raw=answer)
        if payer.kind in (PayerKind.WAP, PayerKind.PAGE):
            api = (
                self._sdk.api_alipay_trade_wap_pay
                if payer.kind == PayerKind.WAP
                else self._sdk.api_alipay_trade_page_pay
            )
            signed = api(
                order.description,
                out,
                amount,
                return_url=payer.return_url,
                notify_url=order.notify_url,
                **extra,
            )
            return Checkout(
                kind=payer.kind, redirect_url=f"{self.config.gateway_url}?{signed}"
            )
        if payer.kind == PayerKind.IN_APP:
            if not payer.buyer_id:
                raise ValueError("an in-app Alipay order needs the buyer's id")
            # server_api, not api_alipay_trade_create: the SDK's own method names
            # the answer "alipay_trade_create" without "_response".
            with self._translated("create", out):
                answer = self._sdk.server_api(
                    "alipay.trade.create",
                    {
                        "out_trade_no": out,
                        "total_amount": amount,
                        "subject": order.description,
                        "buyer_id": payer.buyer_id,
                        "product_code": "JSAPI_PAY",
                        **extra,
                    },
                    notify_url=order.notify_url,
                )
            answer = self._checked(answer, "create", out)
            return Checkout(
                kind=payer.kind,
                jsapi_params={"tradeNO": answer["trade_no"]},
                raw=answer,
            )
        raise ValueError(f"Alipay cannot serve a {payer.kind} payer")

    def pay_with_code(self, order: OrderRequest, payment_code: str) -> PaymentResult:
        out = order.out_trade_no
        logger.info(
            "alipay_code_payment",
            extra={"out_trade_no": out, "code": mask_code(payment_code)},
        )
        with self._translated("pay", out):
            answer = self._sdk.api_alipay_trade_pay(
                out,
                "bar_code",
                payment_code,
                order.description,
                notify_url=order.notify_url,
                total_amount=format_yuan(order.amount_fen),
                **self._order_extras(order),
            )
        answer = self._checked(answer, "pay", out, accept=("10000", "10003"))
        if answer["code"] == "10003":
            return PaymentResult(
                out_trade_no=out,
                state=TradeState.PAYING,
                transaction_id=answer.get("trade_no"),
                amount_fen=self._fen(answer.get("total_amount")),
                raw=answer,
            )
        return self._payment(
            answer, TradeState.SUCCEEDED, out, paid_at=answer.get("gmt_payment")
        )

    def query(self, out_trade_no: str) -> PaymentResult:
        with self._translated("query", out_trade_no):
            answer = self._sdk.api_alipay_trade_query(out_trade_no=out_trade_no)
        try:
            answer = self._checked(answer, "query", out_trade_no)
        except AlipayRejected as error:
            if error.sub_code == "ACQ.TRADE_NOT_EXIST":
                return PaymentResult(
                    out_trade_no=out_trade_no,
                    state=TradeState.NOT_FOUND,
                    raw=error.response,
                )
            raise
        state = self._trade_state(answer.get("trade_status"), out_trade_no)
        return self._payment(
            answer, state, out_trade_no, paid_at=answer.get("send_pay_date")
        )

    def close(self, out_trade_no: str) -> None:
        """Close an unpaid trade. Alipay knows a QR, WAP or page trade only once
        the payer has scanned it or opened the cashier: before that this raises
        ``AlipayRejected`` with ``ACQ.TRADE_NOT_EXIST``, and it is the order's
        ``time_expire`` (sent from ``OrderRequest.expires_at``) that stops a
        later payment."""
        with self._translated("close", out_trade_no):
            answer = self._sdk.api_alipay_trade_close(out_trade_no=out_trade_no)
        try:
            self._checked(answer, "close", out_trade_no)
        except AlipayRejected as error:
            # Closing twice is not an error for us; Alipay says "bad status".
            if (
                error.sub_code != "ACQ.TRADE_STATUS_ERROR"
                or self.query(out_trade_no).state != TradeState.CLOSED
            ):
                raise

    def reverse(self, out_trade_no: str) -> ReverseResult:
        with self._translated("cancel", out_trade_no):
            answer = self._sdk.api_alipay_trade_cancel(out_trade_no=out_trade_no)
        try:
            answer = self._checked(answer, "cancel", out_trade_no)
        except (AlipayUnavailable, AlipayRejected) as error:
            # Alipay's cancel says itself whether asking again can help.
            flag = error.response.get("retry_flag")
            if flag == "Y":
                return ReverseResult(
                    out_trade_no=out_trade_no,
                    done=False,
                    retry=True,
                    raw=error.response,
                )
            if flag == "N" and isinstance(error, AlipayUnavailable):
                # Even a system error is final when Alipay says not to retry:
                # a refusal, for the caller to ask what the trade became.
                raise AlipayRejected(
                    str(error),
                    code=error.code,
                    response=error.response,
                    out_trade_no=out_trade_no,
                    error_code=error.error_code,
                ) from error
            raise
        retry = answer.get("retry_flag") == "Y"
        return ReverseResult(
            out_trade_no=out_trade_no,
            done=not retry,
            retry=retry,
            action=answer.get("action"),
            raw=answer,
        )

    def refund(self, refund: RefundRequest) -> RefundResult:
        """Refund part or all of a paid trade. Alipay sends refund notifications
        to the order's own ``notify_url``; ``refund.notify_url`` is not used."""
        out = refund.out_trade_no
        extra = {"out_request_no": refund.out_refund_no}
        if refund.reason:
            extra["refund_reason"] = refund.reason
        with self._translated("refund", out):
            answer = self._sdk.api_alipay_trade_refund(
                format_yuan(refund.refund_fen), out_trade_no=out, **extra
            )
        answer = self._checked(answer, "refund", out)
        if answer.get("fund_change") != "Y":
            # Only "Y" says money went back now. "N" (this out_request_no asked
            # before) or no answer at all: Alipay's own word is to ask the refund
            # query what became of it.
            return self.query_refund(refund.out_refund_no, out)
        return RefundResult(
            out_refund_no=refund.out_refund_no,
            state=RefundState.SUCCEEDED,
            amount_fen=self._fen(answer.get("send_back_fee")) or refund.refund_fen,
            out_trade_no=out,
            raw=answer,
        )

    def query_refund(self, out_refund_no: str, out_trade_no: str) -> RefundResult:
        with self._translated("refund_query", out_trade_no):
            answer = self._sdk.api_alipay_trade_fastpay_refund_query(
                out_refund_no, out_trade_no=out_trade_no
            )
        try:
            answer = self._checked(answer, "refund_query", out_trade_no)
        except AlipayRejected as error:
            if error.sub_code == "ACQ.TRADE_NOT_EXIST":
                return RefundResult(
                    out_refund_no=out_refund_no,
                    state=RefundState.NOT_FOUND,
                    out_trade_no=out_trade_no,
                    raw=error.response,
                )
            raise
        # Alipay answers success with no refund fields for a refund it never
        # made; refund_status is REFUND_SUCCESS or, in older answers, absent.
        if not answer.get("refund_amount"):
            state = RefundState.NOT_FOUND
        elif answer.get("refund_status", "REFUND_SUCCESS") == "REFUND_SUCCESS":
            state = RefundState.SUCCEEDED
        else:
            state = RefundState.PROCESSING
        return RefundResult(
            out_refund_no=out_refund_no,
            state=state,
            amount_fen=self._fen(answer.get("refund_amount")),
            out_trade_no=out_trade_no,
            raw=answer,
        )

    # -- notifications ------------------------------------------------------------

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> Notification:
        try:
            text = body.decode("utf-8")
            params = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError) as error:
            raise MalformedNotification(
                "not a form-encoded notification", channel=CHANNEL
            ) from error
        out = params.get("out_trade_no")
        signature = params.get("sign")
        if not signature:
            raise BadNotificationSignature(
                "notification without a signature", channel=CHANNEL, out_trade_no=out
            )
        if params.get("sign_type") != "RSA2":
            raise BadNotificationSignature(
                "notification not signed with RSA2", channel=CHANNEL, out_trade_no=out
            )
        # verify() pops sign_type and rewrites values in what it is given.
        unsigned = {name: value for name, value in params.items() if name != "sign"}
        try:
            verified = self._sdk.verify(dict(unsigned), signature)
        except (AliPayException, ValueError, TypeError) as error:
            raise BadNotificationSignature(
                "notification signature unreadable", channel=CHANNEL, out_trade_no=out
            ) from error
        if not verified:
            logger.warning(
                "alipay_notification_bad_signature", extra={"out_trade_no": out}
            )
            raise BadNotificationSignature(
                "notification signature does not verify",
                channel=CHANNEL,
                out_trade_no=out,
            )

        missing = [
            name
            for name in (
                "notify_id",
                "notify_time",
                "app_id",
                "out_trade_no",
                "trade_status",
                "total_amount",
            )
            if not params.get(name)
        ]
        if missing:
            raise MalformedNotification(
                f"notification lacks {', '.join(missing)}",
                channel=CHANNEL,
                out_trade_no=out,
            )
        sent_at = self._moment(params["notify_time"], out)
        assert sent_at is not None
        skew = abs(self._clock() - sent_at).total_seconds()
        if skew > self.config.notification_skew_seconds:
            logger.warning(
                "alipay_notification_stale",
                extra={"out_trade_no": out, "skew_seconds": int(skew)},
            )
            raise StaleNotification(
                "notification notify_time too far from now",
                channel=CHANNEL,
                out_trade_no=out,
            )
        notify_id = params["notify_id"]
        if self._session_factory is not None:
            session = self._session_factory()
        else:
            from campus.database import db

            session = db.session()
        if already_accepted(session, CHANNEL, notify_id):
            raise DuplicateNotification(
                "notification already accepted", channel=CHANNEL, out_trade_no=out
            )

        if params["trade_status"] not in TRADE_STATES:
            raise MalformedNotification(
                "unknown trade_status", channel=CHANNEL, out_trade_no=out
            )
        state = TRADE_STATES[params["trade_status"]]
        try:
            payment = self._payment(
                params,
                state,
                params["out_trade_no"],
                paid_at=params.get("gmt_payment"),
                payer_key="buyer_id",
            )
        except InvalidAmount as error:
            raise MalformedNotification(
                "notification amount unreadable", channel=CHANNEL, out_trade_no=out
            ) from error
        refund = None
        kind = NotificationKind.PAYMENT
        if params.get("out_biz_no") and params.get("refund_fee"):
            # refund_fee is the trade's refunded total so far, not this refund's
            # amount: query_refund gives that.
            kind = NotificationKind.REFUND
            refund = RefundResult(
                out_refund_no=params["out_biz_no"],
                state=RefundState.SUCCEEDED,
                out_trade_no=out,
                raw=params,
            )
        logger.info(
            "alipay_notification_verified",
            extra={"out_trade_no": out, "notify_id": notify_id, "kind": kind.value},
        )
        return Notification(
            channel=ChannelName.ALIPAY,
            notification_id=notify_id,
            kind=kind,
            created_at=sent_at,
            merchant_id=params["app_id"],
            payment=payment,
            refund=refund,
            raw=params,
        )

    def notification_ack(self, accepted: bool) -> tuple[bytes, int, dict[str, str]]:
        """Alipay reads only the body: ``success`` stops its retries, anything
        else gets the notification sent again on its schedule."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        return (b"success", 200, headers) if accepted else (b"fail", 400, headers)

    # -- bills and user authorisation ----------------------------------------------

    def download_bill(self, day: dt.date) -> Bill:
        with self._translated("bill_url", None):
            answer = self._sdk.server_api(
                "alipay.data.dataservice.bill.downloadurl.query",
                {"bill_type": "trade", "bill_date": day.isoformat()},
            )
        url = self._checked(answer, "bill_url", None)["bill_download_url"]
        if not bill_host_allowed(url, self.config.gateway_url):
            # The answer is signed, but a URL we would fetch from anywhere is a
            # way to make this server call a host of someone else's choosing.
            raise AlipayUnavailable(
                f"the bill is offered at a foreign host: {url[:80]}"
            )
        with self._translated("bill_file", None):
            # No redirects: the host check above must hold for the file itself.
            response = requests.get(
                bill_fetch_url(url),
                timeout=self.config.timeout_seconds,
                allow_redirects=False,
            )
            response.raise_for_status()
            if response.is_redirect:
                raise AlipayUnavailable("the bill download redirects elsewhere")
        content = response.content
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                broken = archive.testzip()
        except zipfile.BadZipFile as error:
            raise AlipayUnavailable("the bill download is not a whole zip") from error
        if broken is not None:
            raise AlipayUnavailable("the bill download is damaged")
        filename = dict(parse_qsl(url.partition("?")[2])).get(
            "downloadFileName", f"alipay_{day:%Y%m%d}.csv.zip"
        )
        logger.info(
            "alipay_bill_downloaded",
            extra={"day": day.isoformat(), "bytes": len(content)},
        )
        return Bill(
            channel=ChannelName.ALIPAY,
            day=day,
            content=content,
            filename=filename,
            sha256=hashlib.sha256(content).hexdigest(),
        )

    def authorization_url(
        self, redirect_uri: str, state: str = "", scope: str = "auth_base"
    ) -> str:
        """Where to send a payer inside the Alipay app so that Alipay redirects
        back to ``redirect_uri`` with an ``auth_code``."""
        query = {
            "app_id": self.config.app_id,
            "scope": scope,
            "redirect_uri": redirect_uri,
        }
        if state:
            query["state"] = state
        return f"{self.config.authorize_url}?{urlencode(query)}"

    def buyer_id(self, auth_code: str) -> str:
        """Exchange a user-authorisation ``auth_code`` for the buyer's user id."""
        with self._translated("oauth_token", None):
            answer = self._sdk.server_api(
                "alipay.system.oauth.token",
                grant_type="authorization_code",
                code=auth_code,
            )
        # A granted token carries no code at all; a refused one comes back as an
        # error_response with 40002 isv.code-invalid.
        answer = self._checked(answer, "oauth_token", None, accept=(None, "10000"))
        return str(answer["user_id"])

    # -- the one place for each kind of error -----------------------------------------

    @contextmanager
    def _translated(self, operation: str, out_trade_no: str | None) -> Iterator[None]:
        started = time.monotonic()
        extra: dict[str, Any] = {"operation": operation, "out_trade_no": out_trade_no}
        try:
            yield
        except _UnverifiedAnswer as answer:
            self._raise_unverified(answer, operation, out_trade_no)
        except AliPayValidationError as error:
            logger.warning("alipay_answer_forged", extra=extra)
            raise ForgedResponse(
                "Alipay's answer does not verify",
                channel=CHANNEL,
                out_trade_no=out_trade_no,
            ) from error
        except (
            OSError,
            http.client.HTTPException,
            requests.RequestException,
            json.JSONDecodeError,
        ) as error:
            if isinstance(error, urllib.error.HTTPError):
                # The SDK drops the error page unread; its socket must be closed.
                error.close()
            logger.warning(
                "alipay_unavailable", extra={**extra, "error": type(error).__name__}
            )
            raise AlipayUnavailable(
                f"Alipay {operation}: {type(error).__name__}", out_trade_no=out_trade_no
            ) from error
        finally:
            extra["ms"] = int((time.monotonic() - started) * 1000)
            logger.info("alipay_call", extra=extra)

    def _raise_unverified(
        self, answer: _UnverifiedAnswer, operation: str, out_trade_no: str | None
    ) -> NoReturn:
        """Verify an answer the SDK gave up on, then raise what it says."""
        try:
            response = json.loads(answer.raw)
        except json.JSONDecodeError as error:
            raise AlipayUnavailable(
                f"Alipay {operation}: not JSON", out_trade_no=out_trade_no
            ) from error
        key = "error_response" if "error_response" in response else answer.response_type
        if "sign" not in response or key not in response:
            logger.warning(
                "alipay_answer_unsigned",
                extra={"operation": operation, "out_trade_no": out_trade_no},
            )
            raise ForgedResponse(
                "Alipay's answer carries no signature",
                channel=CHANNEL,
                out_trade_no=out_trade_no,
            )
        content = self._sdk._get_string_to_be_signed(answer.raw, key)
        if not self._sdk._verify(content, response["sign"]):
            raise ForgedResponse(
                "Alipay's answer does not verify",
                channel=CHANNEL,
                out_trade_no=out_trade_no,
            )
        payload = json.loads(content)
        self._checked(
            payload,
            operation,
            out_trade_no,
            accept=("10000",) if payload.get("code") else ("10000", None),
        )
        raise AlipayUnavailable(
            f"Alipay {operation}: unexpected error_response",
            out_trade_no=out_trade_no,
            response=payload,
        )

    def _checked(
        self,
        answer: Mapping[str, Any],
        operation: str,
        out_trade_no: str | None,
        accept: tuple[str | None, ...] = ("10000",),
    ) -> dict[str, Any]:
        code = answer.get("code")
        if code in accept:
            return dict(answer)
        sub_code = answer.get("sub_code")
        extra = {
            "operation": operation,
            "out_trade_no": out_trade_no,
            "code": code,
            "sub_code": sub_code,
        }
        # isv.invalid-signature's sub_msg goes on with the whole string the
        # gateway checked, payment code included: keep what precedes it.
        reason = str(answer.get("sub_msg") or answer.get("msg") or "")
        message = f"Alipay {operation}: {code} {sub_code or ''} {reason}"
        message = message.split("：", 1)[0].strip()
        if (
            code == "20000"
            or code is None
            or code == "10003"
            or sub_code in UNAVAILABLE_SUB_CODES
        ):
            logger.warning("alipay_unavailable", extra=extra)
            raise AlipayUnavailable(
                message,
                code=code,
                response=answer,
                out_trade_no=out_trade_no,
                error_code=sub_code or code,
            )
        logger.info("alipay_rejected", extra=extra)
        raise AlipayRejected(
            message,
            code=code,
            response=answer,
            out_trade_no=out_trade_no,
            error_code=sub_code or code,
        )

    # -- conversions at the edge ------------------------------------------------------

    def _order_extras(self, order: OrderRequest) -> dict[str, str]:
        extra: dict[str, str] = {}
        if order.expires_at is not None:
            extra["time_expire"] = order.expires_at.astimezone(SHANGHAI).strftime(STAMP)
        if order.attach:
            extra["passback_params"] = order.attach
        return extra

    @staticmethod
    def _fen(text: Any) -> int | None:
        return parse_fen(str(text), allow_zero=True) if text not in (None, "") else None

    @staticmethod
    def _moment(text: str | None, out_trade_no: str | None) -> dt.datetime | None:
        if not text:
            return None
        try:
            # Alipay writes Beijing time; refunds add milliseconds.
            return dt.datetime.strptime(text[:19], STAMP).replace(tzinfo=SHANGHAI)
        except ValueError as error:
            raise MalformedNotification(
                f"not an Alipay time: {text[:32]!r}",
                channel=CHANNEL,
                out_trade_no=out_trade_no,
            ) from error

    @staticmethod
    def _trade_state(status: str | None, out_trade_no: str) -> TradeState:
        try:
            return TRADE_STATES[status or ""]
        except KeyError as error:
            raise AlipayUnavailable(
                f"unknown trade_status {status!r}", out_trade_no=out_trade_no
            ) from error

    def _payment(
        self,
        answer: Mapping[str, Any],
        state: TradeState,
        out_trade_no: str,
        *,
        paid_at: str | None,
        payer_key: str = "buyer_user_id",
    ) -> PaymentResult:
        return PaymentResult(
            out_trade_no=answer.get("out_trade_no") or out_trade_no,
            state=state,
            transaction_id=answer.get("trade_no"),
            amount_fen=self._fen(answer.get("total_amount")),
            payer_id=answer.get(payer_key),
            paid_at=self._moment(paid_at, out_trade_no),
            raw=dict(answer),
        )


def bill_host_allowed(url: str, gateway_url: str) -> bool:
    """Whether ``url`` is where Alipay keeps bill files: an ``alipay.com`` host
    (``dwbillcenter.alipay.com`` today), or exactly the gateway's own scheme, host
    and port (the sandbox)."""
    parts, gateway = urlsplit(url), urlsplit(gateway_url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in {"http", "https"}:
        return False
    if host == "alipay.com" or host.endswith(".alipay.com"):
        return True
    return (parts.scheme, host, parts.port) == (
        gateway.scheme,
        (gateway.hostname or "").lower(),
        gateway.port,
    )


def bill_fetch_url(url: str) -> str:
    """The address to fetch: Alipay's hosts over https even when the answer says
    http, since the file itself is unsigned and reconciliation repairs orders from
    it (a man in the middle of a plain-HTTP download could otherwise credit one)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and (
        host == "alipay.com" or host.endswith(".alipay.com")
    ):
        return urlunsplit(parts._replace(scheme="https"))
    return url
