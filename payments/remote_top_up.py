"""Remote top-up end to end: open the order, ask the channel, learn the outcome.

The database transaction that opens a top-up is committed before the channel is
called, and no transaction is held open across a call: a channel that takes ten
seconds must not hold a card's row lock for ten seconds. What the channel answered
is recorded raw (``channel_log``) whatever happens next.

How an order learns it was paid, in the order these usually happen:

* the channel's notification (``payments.notifications``);
* ``refresh_top_up``: the result page asks, and we query the channel;
* ``resolve_stale_top_ups``: the job queries every order still paying after a few
  minutes, and closes at the channel (first) and here those past their expiry;
* reconciliation, from the next day's bill.

All of them settle through ``topups.settle_top_up``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

from flask import current_app
from flask_babel import lazy_gettext

from campus import clock
from campus.database import db
from campus.errors import CampusError, ServiceUnavailable
from payments.channel_log import recorded_call, scrub
from payments.channels import channel_for
from payments.channels.base import (
    ChannelError,
    ChannelRejected,
    Checkout,
    OrderRequest,
    PayerContext,
    PaymentResult,
    TradeState,
)
from payments.notifications import notify_url
from payments.topups import (
    TopUp,
    TopUpLimits,
    TopUpState,
    claim_stale,
    find_top_up,
    finish_unpaid,
    open_top_up,
    settle_top_up,
)

logger = logging.getLogger(__name__)

DESCRIPTION = "校园卡充值 Campus card top-up"


class ChannelRefusedTopUp(CampusError):
    status = 502
    code = "channel_refused"
    title = lazy_gettext("The payment channel refused the order")


def _settings():  # type: ignore[no-untyped-def]
    return current_app.extensions["campus.settings"]


def _now() -> dt.datetime:
    return clock.now()


def limits() -> TopUpLimits:
    settings = _settings()
    return TopUpLimits(
        minimum_fen=settings.top_up_min_fen,
        maximum_fen=settings.top_up_max_fen,
        daily_cap_fen=settings.top_up_daily_cap_fen,
    )


def start_top_up(
    card_number: str, amount_fen: int, channel_name: str, payer: PayerContext
) -> tuple[TopUp, Checkout]:
    """Open a top-up and create its order at the channel; return what the payer's
    device needs. Raises ``ChannelRefusedTopUp`` (the order failed) or
    ``ServiceUnavailable`` (the channel did not answer; the order stays paying
    and the query job will settle or close it)."""
    settings = _settings()
    now = _now()
    with db.transaction() as session:
        top_up = open_top_up(
            session,
            card_number,
            amount_fen,
            channel=channel_name,
            payer_kind=payer.kind.value,
            limits=limits(),
            zone=settings.zone,
            now=now,
            expires_in=dt.timedelta(minutes=settings.top_up_expiry_minutes),
        )
        number, expires_at = top_up.out_trade_no, top_up.expires_at

    order = OrderRequest(
        out_trade_no=number,
        amount_fen=amount_fen,
        description=DESCRIPTION,
        notify_url=notify_url(channel_name),
        expires_at=expires_at,
    )
    channel = channel_for(channel_name)
    try:
        with recorded_call(channel_name, "create_order", number, order) as call:
            checkout = channel.create_order(order, payer)
            call.response = checkout.raw
    except ChannelRejected as refused:
        with db.transaction() as session:
            finish_unpaid(session, number, TopUpState.FAILED, str(refused), now=now)
        raise ChannelRefusedTopUp(
            lazy_gettext(
                "The payment channel refused the order: %(reason)s", reason=str(refused)
            ),
            out_trade_no=number,
            channel_code=refused.error_code,
        ) from refused
    except ChannelError as unknown:
        logger.warning(
            "top_up_create_unknown",
            extra={"out_trade_no": number, "error": type(unknown).__name__},
        )
        raise ServiceUnavailable(
            lazy_gettext("The payment channel did not answer. Please try again."),
            out_trade_no=number,
        ) from unknown

    with db.transaction() as session:
        top_up = find_top_up(session, number)
        top_up.checkout = json.dumps(
            scrub(dataclasses.asdict(checkout)), ensure_ascii=False
        )
    return top_up, checkout


def _query(channel_name: str, out_trade_no: str) -> PaymentResult:
    with recorded_call(channel_name, "query", out_trade_no) as call:
        result = channel_for(channel_name).query(out_trade_no)
        call.response = result.raw
    return result


def refresh_top_up(out_trade_no: str) -> TopUp:
    """The order's state, asking the channel first while it is still paying."""
    session = db.session()
    top_up = find_top_up(session, out_trade_no)
    if top_up.state is not TopUpState.PAYING:
        return top_up
    channel_name = top_up.channel
    session.rollback()
    try:
        result = _query(channel_name, out_trade_no)
    except ChannelError:
        # The page will ask again; the job and reconciliation stand behind it.
        return find_top_up(db.session(), out_trade_no)
    if result.state is TradeState.SUCCEEDED:
        with db.transaction() as session:
            settle_top_up(session, channel_name, result, via="query", now=_now())
    return find_top_up(db.session(), out_trade_no)


@dataclasses.dataclass
class ResolveReport:
    settled: int = 0
    closed: int = 0
    still_paying: int = 0
    unknown: int = 0


def resolve_stale_top_ups(
    now: dt.datetime | None = None, older_than: dt.timedelta = dt.timedelta(minutes=2)
) -> ResolveReport:
    """Query every top-up still paying after ``older_than``: settle the paid ones;
    close the expired ones at the channel first, then here. Safe to run on two
    machines at once (orders are claimed with a lease)."""
    now = now or _now()
    report = ResolveReport()
    with db.transaction() as session:
        numbers = claim_stale(session, now=now, older_than=older_than)
    for number in numbers:
        top_up = find_top_up(db.session(), number)
        channel_name, expires_at = top_up.channel, top_up.expires_at
        db.session.rollback()
        try:
            result = _query(channel_name, number)
            if result.state is TradeState.SUCCEEDED:
                with db.transaction() as session:
                    settle_top_up(session, channel_name, result, via="query", now=now)
                report.settled += 1
            elif result.state in {
                TradeState.CLOSED,
                TradeState.REVERSED,
                TradeState.FAILED,
            }:
                with db.transaction() as session:
                    finish_unpaid(
                        session,
                        number,
                        TopUpState.CLOSED,
                        f"channel says {result.state.value}",
                        now=now,
                    )
                report.closed += 1
            elif now >= expires_at:
                paid = _close_at_channel(channel_name, number, result)
                with db.transaction() as session:
                    if paid is not None:
                        settle_top_up(session, channel_name, paid, via="query", now=now)
                        report.settled += 1
                    else:
                        finish_unpaid(
                            session, number, TopUpState.CLOSED, "expired", now=now
                        )
                        report.closed += 1
            else:
                report.still_paying += 1
        except ChannelError as error:
            # Unknown outcome: the lease runs out and a later run asks again.
            logger.warning(
                "top_up_resolve_unknown",
                extra={"out_trade_no": number, "error": type(error).__name__},
            )
            report.unknown += 1
    if numbers:
        logger.info("top_ups_resolved", extra=dataclasses.asdict(report))
    return report


def _close_at_channel(
    channel_name: str, number: str, result: PaymentResult
) -> PaymentResult | None:
    """Close an expired order at the channel. Returns the payment instead when the
    payer paid just before the close."""
    if result.state is TradeState.NOT_FOUND:
        # Never created there (the create call failed before the order existed, or
        # an Alipay payer never opened it): nothing to close.
        return None
    try:
        with recorded_call(channel_name, "close", number):
            channel_for(channel_name).close(number)
    except ChannelRejected:
        # The channel would not close it: already closed, or paid a moment ago.
        latest = _query(channel_name, number)
        if latest.state is TradeState.SUCCEEDED:
            return latest
    return None
