"""The channels' notification endpoints: verify first, then act once.

For each notification, in this order:

1. the adapter verifies it (signature with the key chosen by serial, timestamp
   freshness, decryption) and refuses anything it cannot trust;
2. we check it is addressed to us (WeChat ``mchid`` and ``appid``, Alipay ``app_id``
   and ``seller_id``) and names an order we have;
3. one transaction settles it through the order's settle function and remembers the
   notification id, so a copy arriving later, or at the same moment, is
   acknowledged without a second credit.

Each channel is answered as it expects: WeChat Pay gets a 2xx to stop and an error
status to retry; Alipay gets ``success`` to stop and anything else to retry. A
notification we could not act on because of our own failure gets the retry answer;
one we will never act on (forged, not ours) is refused and logged with its order.
Every notification is recorded raw with its outcome.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from campus.database import db
from payments import orders
from payments.channel_log import record_notification
from payments.channels import channel_for
from payments.channels.base import (
    Channel,
    ChannelError,
    DuplicateNotification,
    Notification,
    NotificationKind,
    NotificationRefused,
)
from payments.channels.received import remember_accepted
from payments.orders import SettleOutcome

logger = logging.getLogger(__name__)

bp = Blueprint("notifications", __name__)


class NotForUs(NotificationRefused):
    """Verified, but addressed to another merchant or naming no order of ours."""


def _expected_merchant(channel: Channel, notification: Notification) -> bool:
    config: Any = getattr(channel, "config", None)
    if notification.channel == "wechat":
        appid = notification.raw.get("resource", {}).get("appid")
        return notification.merchant_id == config.mchid and appid in (
            None,
            config.appid,
        )
    seller = notification.raw.get("seller_id")
    return notification.merchant_id == config.app_id and (
        not config.seller_id or seller in (None, config.seller_id)
    )


@dataclasses.dataclass(frozen=True)
class Handled:
    outcome: str
    """``accepted``, ``duplicate``, ``flagged`` or ``ignored``."""
    notification_id: str
    out_trade_no: str | None


def handle_notification(
    channel_name: str, headers: dict[str, str], body: bytes
) -> Handled:
    """Verify and act on one notification. Raises ``NotificationRefused`` for what
    we refuse, and lets our own failures (database) propagate for a retry."""
    channel = channel_for(channel_name)
    notification = channel.parse_notification(headers, body)
    payment = notification.payment
    out_trade_no = payment.out_trade_no if payment else None
    if not _expected_merchant(channel, notification):
        raise NotForUs(
            f"addressed to {notification.merchant_id}, not to us",
            channel=channel_name,
            out_trade_no=out_trade_no,
        )
    session = db.session()
    settle: Any = None
    if notification.kind is NotificationKind.PAYMENT and payment is not None:
        kind = orders.order_kind_for(session, payment.out_trade_no)
        settle, result = (kind.settle if kind else None), payment
    elif notification.kind is NotificationKind.REFUND and notification.refund:
        out_trade_no = notification.refund.out_trade_no
        refund_kind = orders.refund_kind_for(session, notification.refund.out_refund_no)
        settle, result = (
            (refund_kind.settle if refund_kind else None),
            notification.refund,
        )
    if settle is None:
        raise NotForUs(
            "names no order of ours", channel=channel_name, out_trade_no=out_trade_no
        )
    try:
        outcome = settle(session, channel_name, result, via="notification")
        if not remember_accepted(
            session, channel_name, notification.notification_id, out_trade_no
        ):
            # A copy accepted by another transaction while we settled: the settle
            # function already made ours a no-op; acknowledge it as a duplicate.
            session.rollback()
            return Handled("duplicate", notification.notification_id, out_trade_no)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return Handled(
        "flagged" if outcome is SettleOutcome.FLAGGED else "accepted",
        notification.notification_id,
        out_trade_no,
    )


def _receive(channel_name: str) -> Response:
    headers = dict(request.headers)
    body = request.get_data(cache=False)
    channel = channel_for(channel_name)
    try:
        handled = handle_notification(channel_name, headers, body)
    except DuplicateNotification as duplicate:
        record_notification(
            channel_name,
            headers,
            body,
            "duplicate",
            out_trade_no=duplicate.out_trade_no,
        )
        return _answer(channel, accepted=True)
    except NotificationRefused as refused:
        logger.warning(
            "notification_refused",
            extra={
                "channel": channel_name,
                "out_trade_no": refused.out_trade_no,
                "reason": str(refused),
            },
        )
        record_notification(
            channel_name,
            headers,
            body,
            "refused",
            reason=f"{type(refused).__name__}: {refused}",
            out_trade_no=refused.out_trade_no,
        )
        return _answer(channel, accepted=False)
    except ChannelError as unknown:
        # We could not verify it now (e.g. platform certificates unreachable):
        # ask the channel to send it again later.
        logger.warning(
            "notification_unverifiable",
            extra={"channel": channel_name, "error": type(unknown).__name__},
        )
        record_notification(channel_name, headers, body, "error", reason=str(unknown))
        return _answer(channel, accepted=False)
    except SQLAlchemyError:
        # Our failure, not the channel's: refuse so that it tries again later.
        logger.exception("notification_failed", extra={"channel": channel_name})
        record_notification(channel_name, headers, body, "error", reason="database")
        return _answer(channel, accepted=False)
    record_notification(
        channel_name,
        headers,
        body,
        handled.outcome,
        notification_id=handled.notification_id,
        out_trade_no=handled.out_trade_no,
    )
    logger.info(
        "notification_handled",
        extra={
            "channel": channel_name,
            "outcome": handled.outcome,
            "out_trade_no": handled.out_trade_no,
        },
    )
    return _answer(channel, accepted=True)


def _answer(channel: Channel, accepted: bool) -> Response:
    body, status, headers = channel.notification_ack(accepted)
    return Response(body, status=status, headers=headers)


@bp.post("/notify/wechat")
def wechat() -> Response:
    return _receive("wechat")


@bp.post("/notify/alipay")
def alipay() -> Response:
    return _receive("alipay")


def notify_url(channel_name: str) -> str:
    settings = current_app.extensions["campus.settings"]
    return f"{settings.base_url.rstrip('/')}/notify/{channel_name}"
