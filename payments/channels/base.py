"""The one interface every payment channel implements.

Orders, notifications, the POS API and reconciliation talk to a channel only through
``Channel``; ``wechat`` and ``alipay`` wrap the channels' SDKs, ``campus`` (the
wallet itself) comes with the POS issue. Amounts cross this interface in integer fen;
each implementation converts at its own edge.

Errors::

    ChannelError                    anything a channel call can end in, besides success
    ├── ChannelUnavailable          timeout, connection refused, 5xx, SYSTEMERROR:
    │                               the outcome is UNKNOWN and must be queried
    ├── ChannelRejected             a definite business answer (code, message):
    │                               the channel did not do what was asked
    ├── ForgedResponse              a response whose signature is missing or wrong
    ├── ChannelNotConfigured        keys or ids missing for this channel
    └── NotificationRefused         an incoming notification we must not act on
        ├── BadNotificationSignature
        ├── StaleNotification       timestamp more than 5 minutes off
        ├── DuplicateNotification   an id already accepted (acknowledge, do nothing)
        └── MalformedNotification   undecryptable or unparsable

Each carries ``channel`` and, where known, ``out_trade_no`` and the channel's own
``error_code``, so that logs and answers name the order.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any


class ChannelName(enum.StrEnum):
    WECHAT = "wechat"
    ALIPAY = "alipay"
    CAMPUS = "campus"


class TradeState(enum.StrEnum):
    """A payment as the channel sees it."""

    NOT_FOUND = "not_found"
    """The channel has no such order (never created, or created and expired
    before the payer saw it)."""

    PAYING = "paying"
    """Created and not yet paid; for a code payment, the payer is entering a
    password (USERPAYING / 10003)."""

    SUCCEEDED = "succeeded"
    """Paid: the money moved."""

    REFUNDED = "refunded"
    """Paid and later refunded in part or in full (WeChat REFUND)."""

    CLOSED = "closed"
    """Closed before payment, or (Alipay TRADE_CLOSED) fully refunded."""

    REVERSED = "reversed"
    """A code payment reversed or cancelled: money that moved went back."""

    FAILED = "failed"
    """The payment failed (PAYERROR, a refused code)."""


class RefundState(enum.StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    CLOSED = "closed"
    FAILED = "failed"
    NOT_FOUND = "not_found"
    ABNORMAL = "abnormal"
    """WeChat Pay's ``ABNORMAL``: the money left the merchant's account but could
    not reach the payer (a closed bank card); someone must finish it in the
    merchant platform. Neither made nor failed."""


class PayerKind(enum.StrEnum):
    """Where the payer is, which decides the kind of order created."""

    JSAPI = "jsapi"
    """Inside WeChat: JSAPI with the payer's openid."""

    H5 = "h5"
    """WeChat Pay from another phone browser."""

    NATIVE = "native"
    """WeChat QR code shown on a desktop."""

    APP = "app"
    """WeChat Pay from a native app."""

    WAP = "wap"
    """Alipay in a phone browser (alipay.trade.wap.pay)."""

    PAGE = "page"
    """Alipay on a desktop browser page (alipay.trade.page.pay)."""

    PRECREATE = "precreate"
    """Alipay QR code (alipay.trade.precreate)."""

    IN_APP = "in_app"
    """Inside the Alipay app, with the buyer's id from user authorisation."""


@dataclasses.dataclass(frozen=True)
class OrderRequest:
    out_trade_no: str
    amount_fen: int
    description: str
    notify_url: str
    expires_at: dt.datetime | None = None
    attach: str | None = None


@dataclasses.dataclass(frozen=True)
class PayerContext:
    kind: PayerKind
    openid: str | None = None
    """WeChat JSAPI payer."""
    buyer_id: str | None = None
    """Alipay in-app buyer."""
    client_ip: str = "127.0.0.1"
    return_url: str | None = None


@dataclasses.dataclass(frozen=True)
class Checkout:
    """What the payer's device needs to pay an order just created."""

    kind: PayerKind
    jsapi_params: Mapping[str, str] | None = None
    """WeChat JSAPI: appId, timeStamp, nonceStr, package, signType, paySign."""
    redirect_url: str | None = None
    """H5, WAP and page flows: where to send the browser."""
    qr_content: str | None = None
    """Native and precreate: the text to render as a QR code."""
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PaymentResult:
    out_trade_no: str
    state: TradeState
    transaction_id: str | None = None
    amount_fen: int | None = None
    """What the channel says was (or is to be) paid."""
    payer_id: str | None = None
    paid_at: dt.datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ReverseResult:
    out_trade_no: str
    done: bool
    """The channel says the order is reversed/cancelled (money returned if any)."""
    retry: bool
    """Ask again (WeChat ``recall``, Alipay ``retry_flag == "Y"``)."""
    action: str | None = None
    """Alipay's ``action``: ``close`` or ``refund``."""
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RefundRequest:
    out_trade_no: str
    out_refund_no: str
    refund_fen: int
    total_fen: int
    reason: str | None = None
    notify_url: str | None = None


@dataclasses.dataclass(frozen=True)
class RefundResult:
    out_refund_no: str
    state: RefundState
    refund_id: str | None = None
    amount_fen: int | None = None
    out_trade_no: str | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class NotificationKind(enum.StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


@dataclasses.dataclass(frozen=True)
class Notification:
    """A verified notification, decrypted and parsed."""

    channel: ChannelName
    notification_id: str
    kind: NotificationKind
    created_at: dt.datetime
    merchant_id: str
    """WeChat ``mchid`` / Alipay ``app_id`` (and ``seller_id`` in ``raw``): the
    caller checks it is ours."""
    payment: PaymentResult | None = None
    refund: RefundResult | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Bill:
    """A channel's daily bill, as downloaded and checked, before parsing."""

    channel: ChannelName
    day: dt.date
    content: bytes
    """The file as the channel sent it (gunzipped; Alipay: the zip)."""
    filename: str
    sha256: str


class ChannelError(Exception):
    def __init__(
        self,
        message: str,
        *,
        channel: str,
        out_trade_no: str | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.channel = channel
        self.out_trade_no = out_trade_no
        self.error_code = error_code


class ChannelUnavailable(ChannelError):
    """The outcome is unknown: never report it as a failure without a query."""


class ChannelRejected(ChannelError):
    """The channel answered and refused."""


class ForgedResponse(ChannelError):
    """A response that does not carry the channel's valid signature."""


class ChannelNotConfigured(ChannelError):
    pass


class NotificationRefused(ChannelError):
    pass


class BadNotificationSignature(NotificationRefused):
    pass


class StaleNotification(NotificationRefused):
    pass


class DuplicateNotification(NotificationRefused):
    """Already accepted once: acknowledge to stop retries, act on nothing."""


class MalformedNotification(NotificationRefused):
    pass


class Channel(abc.ABC):
    """One payment channel. Implementations are cheap to call concurrently from
    several threads."""

    name: ChannelName

    @abc.abstractmethod
    def create_order(self, order: OrderRequest, payer: PayerContext) -> Checkout:
        """Create a prepay order for the payer's situation."""

    @abc.abstractmethod
    def pay_with_code(self, order: OrderRequest, payment_code: str) -> PaymentResult:
        """Charge a scanned payment code (WeChat codepay, Alipay trade.pay)."""

    @abc.abstractmethod
    def query(self, out_trade_no: str) -> PaymentResult:
        """The order's state at the channel."""

    @abc.abstractmethod
    def close(self, out_trade_no: str) -> None:
        """Close an unpaid order so that it can no longer be paid."""

    @abc.abstractmethod
    def reverse(self, out_trade_no: str) -> ReverseResult:
        """Undo a code payment whose outcome we could not learn (WeChat reverse,
        Alipay cancel)."""

    @abc.abstractmethod
    def refund(self, refund: RefundRequest) -> RefundResult:
        """Ask for a refund of part or all of a paid order."""

    @abc.abstractmethod
    def query_refund(self, out_refund_no: str, out_trade_no: str) -> RefundResult:
        """The refund's state at the channel."""

    @abc.abstractmethod
    def parse_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> Notification:
        """Verify, decrypt and parse an incoming notification, or raise a
        ``NotificationRefused`` subclass. Deduplication by notification id is the
        adapter's job too (raise ``DuplicateNotification``)."""

    @abc.abstractmethod
    def notification_ack(self, accepted: bool) -> tuple[bytes, int, dict[str, str]]:
        """The body, status and headers the channel expects in answer."""

    @abc.abstractmethod
    def download_bill(self, day: dt.date) -> Bill:
        """The day's trade bill, integrity checked (WeChat ``hash_value``)."""
