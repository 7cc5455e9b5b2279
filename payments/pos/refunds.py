"""Refunds of POS payments, in full or in parts, never more than was paid in total.

A ``PosRefund`` moves ``processing ──► succeeded | failed``. Opening one locks the
payment row and reserves the amount in ``refunded_fen`` in the same transaction, so
two refunds at once cannot together pass the total; a failed refund frees it again.
The reverse journal entry (merchant payable → channel clearing, or → the wallet) is
posted by ``settle_refund`` only, once per refund (its idempotency reference), from
``processing`` only. A channel refund settles from the channel's answer, its refund
notification (``REFUND_KIND``) or a later query (``refresh_refund``), whichever comes
first. A refund to a wallet needs an active card: one that is not is refused before
anything is reserved, and a card that stops being active before its refund settles
fails the refund and frees the amount.

Who may refund: finance any payment; a cashier only payments of a merchant they are
assigned to (``pos_cashier_merchants``), and only those of the current business day.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from flask import current_app
from flask_babel import lazy_gettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from campus.auth import Operator, Role
from campus.database import db
from campus.errors import (
    CampusError,
    CardNotActive,
    Conflict,
    Forbidden,
    InvalidAmount,
    InvalidInput,
    NotFound,
)
from payments import ledger
from payments.cards import Card, CardStatus, lock_card_for_payment, status_label
from payments.channel_log import recorded_call
from payments.channels import channel_for
from payments.channels.base import (
    ChannelError,
    ChannelRejected,
    RefundRequest,
    RefundResult,
)
from payments.channels.base import (
    RefundState as ChannelRefundState,
)
from payments.merchants import Merchant
from payments.money import format_yuan
from payments.notifications import notify_url
from payments.orders import SettleOutcome
from payments.pos.config import pos_config
from payments.pos.models import (
    CashierMerchant,
    PaymentState,
    PosPayment,
    PosRefund,
    RefundDestination,
    RefundState,
)
from payments.pos.service import flag_payment, lock_payment, writing
from payments.topups import business_day_bounds

logger = logging.getLogger(__name__)


class RefundNotFound(NotFound):
    code = "refund_not_found"
    title = lazy_gettext("No such refund")


class RefundRefused(Conflict):
    code = "refund_refused"
    title = lazy_gettext("This refund is not allowed")


def _may_refund(session: Session, operator: Operator, payment: PosPayment) -> None:
    if operator.has_role(Role.FINANCE):
        return
    if not operator.has_role(Role.CASHIER):
        raise Forbidden()
    assigned = session.scalar(
        select(CashierMerchant.merchant_id).where(
            CashierMerchant.operator_id == operator.id,
            CashierMerchant.merchant_id == payment.merchant_id,
        )
    )
    zone = current_app.extensions["campus.settings"].zone
    start, end = business_day_bounds(pos_config().now(), zone)
    if assigned is None or not (start <= payment.created_at < end):
        raise Forbidden(
            lazy_gettext("A cashier refunds only today's payments of their merchant.")
        )


def open_refund(
    out_trade_no: str,
    amount_fen: int,
    *,
    operator: Operator,
    destination: RefundDestination = RefundDestination.ORIGINAL,
    card_number: str | None = None,
    reason: str | None = None,
) -> PosRefund:
    """Open a refund and carry it as far as it goes now; the refund as it stands."""
    if amount_fen <= 0:
        raise InvalidAmount(lazy_gettext("The amount must be above zero."))
    now = pos_config().now()
    with writing() as session:
        payment = lock_payment(session, out_trade_no)
        _may_refund(session, operator, payment)
        if payment.state is not PaymentState.SUCCEEDED:
            raise RefundRefused(lazy_gettext("Only a paid payment can be refunded."))
        left = payment.amount_fen - payment.refunded_fen
        if amount_fen > left:
            raise RefundRefused(
                lazy_gettext(
                    "At most %(left)s yuan is left to refund.", left=format_yuan(left)
                ),
                refundable_fen=left,
            )
        card_id = None
        channel = payment.channel or "campus"
        if destination is RefundDestination.WALLET or channel == "campus":
            if card_number:
                card_id = session.scalar(
                    select(Card.id).where(Card.number == card_number)
                )
            else:
                card_id = payment.card_id
            if card_id is None:
                raise InvalidInput(lazy_gettext("Which card should the refund go to?"))
            _require_active_card(session, card_id)
            channel = "campus"
        refund = PosRefund(
            out_refund_no="R" + now.strftime("%Y%m%d%H%M%S") + secrets.token_hex(5),
            payment_id=payment.id,
            amount_fen=amount_fen,
            destination=destination,
            card_id=card_id,
            channel=channel,
            state=RefundState.PROCESSING,
            reason=(reason or "")[:255] or None,
            operator=operator.username,
            created_at=now,
        )
        payment.refunded_fen += amount_fen
        session.add(refund)
        session.flush()
        number, total = refund.out_refund_no, payment.amount_fen
    logger.info(
        "pos_refund_opened",
        extra={
            "out_refund_no": number,
            "out_trade_no": out_trade_no,
            "fen": amount_fen,
        },
    )

    if channel == "campus":
        return _credit_wallet(number, amount_fen, via="wallet")
    return _send(
        channel,
        RefundRequest(
            out_trade_no=out_trade_no,
            out_refund_no=number,
            refund_fen=amount_fen,
            total_fen=total,
            reason=reason,
            notify_url=notify_url(channel),
        ),
        via="refund",
    )


def _send(channel: str, request: RefundRequest, *, via: str) -> PosRefund:
    """Ask the channel for the refund and settle from its answer. Sent again
    under the same number, a refund is made once: both channels key it by it."""
    number = request.out_refund_no
    try:
        with recorded_call(channel, "refund", request.out_trade_no, request) as call:
            result = channel_for(channel).refund(request)
            call.response = result.raw
    except ChannelRejected as refused:
        _fail(number, f"{refused.error_code}: {refused}")
        return find_refund(db.session(), number)
    except ChannelError:
        # Unknown: the refund stays processing; a query or the notification ends it.
        return find_refund(db.session(), number)
    with writing() as session:
        settle_refund(session, channel, result, via=via)
    return find_refund(db.session(), number)


def _require_active_card(session: Session, card_id: int) -> None:
    """Refuse, before anything is reserved, a refund to a card that cannot take
    it: a frozen or lost card's holder may not be the one who gets the money
    back, and a closed card must stay at zero."""
    number, status = session.execute(
        select(Card.number, Card.status).where(Card.id == card_id)
    ).one()
    if status is not CardStatus.ACTIVE:
        raise CardNotActive(
            lazy_gettext(
                "Card %(number)s is %(status)s: refund to an active card instead.",
                number=number,
                status=status_label(status),
            ),
            card=number,
            card_status=status.value,
        )


def _credit_wallet(out_refund_no: str, amount_fen: int, *, via: str) -> PosRefund:
    """Settle a refund to a wallet: the wallet is our own channel, so it
    succeeds at once, or fails (and frees its amount) if the card stopped
    being active after the refund was opened."""
    with writing() as session:
        settle_refund(
            session,
            "campus",
            RefundResult(
                out_refund_no, ChannelRefundState.SUCCEEDED, amount_fen=amount_fen
            ),
            via=via,
        )
    return find_refund(db.session(), out_refund_no)


def find_refund(session: Session, out_refund_no: str) -> PosRefund:
    refund = session.scalar(
        select(PosRefund).where(PosRefund.out_refund_no == out_refund_no)
    )
    if refund is None:
        raise RefundNotFound(out_refund_no=out_refund_no)
    return refund


def _lock_refund(session: Session, out_refund_no: str) -> PosRefund:
    refund = session.scalar(
        select(PosRefund)
        .where(PosRefund.out_refund_no == out_refund_no)
        .with_for_update(of=PosRefund)
        .execution_options(populate_existing=True)
    )
    if refund is None:
        raise RefundNotFound(out_refund_no=out_refund_no)
    return refund


def settle_refund(
    session: Session,
    channel: str,
    result: RefundResult,
    *,
    via: str,
    now: dt.datetime | None = None,
) -> SettleOutcome:
    """Record the channel's word on a refund: on success post the reverse entry,
    once; on failure or closure free the reserved amount."""
    # The POS clock, as every other step of a refund: the sandbox's in a
    # demonstration, so that a refund finishes on the day its bill lists it.
    now = now or pos_config().now()
    refund = _lock_refund(session, result.out_refund_no)
    log = {"out_refund_no": refund.out_refund_no, "via": via}
    if result.refund_id and not refund.refund_id:
        refund.refund_id = result.refund_id
    if result.state in {ChannelRefundState.FAILED, ChannelRefundState.CLOSED}:
        if refund.state is RefundState.PROCESSING:
            _release(session, refund, f"channel says {result.state.value}", now)
        return SettleOutcome.NOT_PAID
    if result.state is ChannelRefundState.ABNORMAL:
        # Freeing the amount would let it be refunded twice once the stuck one
        # is finished by hand: it stays reserved, and finance is told.
        if refund.state is not RefundState.PROCESSING:
            return SettleOutcome.NOT_PAID
        return flag_payment(
            session.get_one(PosPayment, refund.payment_id),
            f"refund {refund.out_refund_no} abnormal at the channel: finish it in "
            "the merchant platform",
            log,
        )
    if result.state is not ChannelRefundState.SUCCEEDED:
        return SettleOutcome.NOT_PAID
    if refund.state is RefundState.SUCCEEDED:
        return SettleOutcome.ALREADY
    if refund.state is not RefundState.PROCESSING or refund.channel != channel:
        logger.warning("pos_refund_flagged", extra={**log, "state": refund.state})
        return SettleOutcome.FLAGGED

    payment = session.get_one(PosPayment, refund.payment_id)
    if result.amount_fen is not None and result.amount_fen != refund.amount_fen:
        # Not ours to settle by ourselves: the refund stays processing, its
        # amount reserved, and the payment goes to finance's flagged orders.
        return flag_payment(
            payment,
            f"refund {refund.out_refund_no}: {result.amount_fen} fen at the "
            f"channel, {refund.amount_fen} fen asked",
            log,
        )
    merchant = session.get_one(Merchant, payment.merchant_id)
    if refund.channel == "campus":
        card_number = session.scalar(
            select(Card.number).where(Card.id == refund.card_id)
        )
        card = lock_card_for_payment(session, card_number or "")
        if card.status is not CardStatus.ACTIVE:
            # Frozen, lost or closed since the refund was opened: a failed refund
            # the operator can see and redo, not one processing for ever.
            _release(session, refund, f"card {card.status.value}", now)
            return SettleOutcome.NOT_PAID
        destination: ledger.AccountLike = card.wallet
    else:
        destination = ledger.clearing_account(session, refund.channel)
    posted = ledger.transfer(
        session,
        kind=ledger.EntryKind.REFUND,
        idempotency_ref=f"pos_refund:{refund.out_refund_no}",
        source=merchant.payable,
        destination=destination,
        amount_fen=refund.amount_fen,
        order_ref=payment.out_trade_no,
        memo=f"refund {refund.out_refund_no} {refund.refund_id or ''}".strip(),
        created_by=refund.operator,
    )
    refund.state = RefundState.SUCCEEDED
    refund.entry_id = posted.entry_id
    refund.finished_at = now
    session.flush()
    logger.info("pos_refund_settled", extra={**log, "fen": refund.amount_fen})
    return SettleOutcome.CREDITED


def _release(session: Session, refund: PosRefund, why: str, now: dt.datetime) -> None:
    payment = lock_payment(session, refund.payment.out_trade_no)
    payment.refunded_fen -= refund.amount_fen
    refund.state = RefundState.FAILED
    refund.failure = why[:255]
    refund.finished_at = now
    logger.info("pos_refund_failed", extra={"out_refund_no": refund.out_refund_no})


def _fail(out_refund_no: str, why: str) -> None:
    with writing() as session:
        refund = _lock_refund(session, out_refund_no)
        if refund.state is RefundState.PROCESSING:
            _release(session, refund, why, pos_config().now())


def refresh_refund(out_refund_no: str) -> PosRefund:
    """Ask the channel about a refund still processing, and settle from it. A
    wallet refund still processing was left by a process that died between
    opening and settling it: settle it now."""
    refund = find_refund(db.session(), out_refund_no)
    if refund.state is not RefundState.PROCESSING:
        return refund
    if refund.channel == "campus":
        amount_fen = refund.amount_fen
        return _credit_wallet(out_refund_no, amount_fen, via="retry")
    payment = refund.payment
    channel, out_trade_no = refund.channel, payment.out_trade_no
    again = RefundRequest(
        out_trade_no=out_trade_no,
        out_refund_no=out_refund_no,
        refund_fen=refund.amount_fen,
        total_fen=payment.amount_fen,
        reason=refund.reason,
        notify_url=notify_url(channel),
    )
    db.session.rollback()
    try:
        with recorded_call(channel, "query_refund", out_trade_no) as call:
            result = channel_for(channel).query_refund(out_refund_no, out_trade_no)
            call.response = result.raw
    except ChannelError:
        return find_refund(db.session(), out_refund_no)
    if result.state is ChannelRefundState.NOT_FOUND:
        # The request never reached the channel, or was lost before it acted:
        # ask again under the same number rather than wait for ever.
        logger.info(
            "pos_refund_sent_again",
            extra={"out_refund_no": out_refund_no, "out_trade_no": out_trade_no},
        )
        return _send(channel, again, via="sent again")
    with writing() as session:
        settle_refund(session, channel, result, via="query")
    return find_refund(db.session(), out_refund_no)


def resolve_stale_refunds(now: dt.datetime | None = None) -> int:
    """Finish refunds left processing longer than ``stale_after_seconds``: a lost
    answer or notification (the channel is asked, and a refund it never got is
    sent again), or a process that died before crediting a wallet. How many it
    finished. Safe on two machines at once: the channel makes a refund once per
    number, and settling locks the refund's row."""
    config = pos_config()
    now = now or config.now()
    numbers = db.session.scalars(
        select(PosRefund.out_refund_no)
        .where(
            PosRefund.state == RefundState.PROCESSING,
            PosRefund.created_at
            <= now - dt.timedelta(seconds=config.stale_after_seconds),
        )
        .order_by(PosRefund.created_at)
        .limit(50)
    ).all()
    db.session.commit()
    finished = 0
    for number in numbers:
        try:
            finished += refresh_refund(number).state is not RefundState.PROCESSING
        except CampusError as error:
            logger.warning(
                "pos_refund_unresolved",
                extra={"out_refund_no": number, "error": error.code},
            )
    if numbers:
        logger.info(
            "pos_refunds_resolved", extra={"stale": len(numbers), "finished": finished}
        )
    return finished


def refund_out(refund: PosRefund) -> dict[str, object]:
    return {
        "out_refund_no": refund.out_refund_no,
        "out_trade_no": refund.payment.out_trade_no,
        "amount_fen": refund.amount_fen,
        "channel": refund.channel,
        "destination": refund.destination.value,
        "state": refund.state.value,
        "refund_id": refund.refund_id,
        "failure": refund.failure,
        "operator": refund.operator,
        "created_at": refund.created_at,
    }


def owns(session: Session, out_refund_no: str) -> bool:
    return (
        session.scalar(
            select(PosRefund.id).where(PosRefund.out_refund_no == out_refund_no)
        )
        is not None
    )
