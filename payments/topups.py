"""Remote top-up (空中圈存): money from WeChat Pay or Alipay into a card's wallet.

A ``TopUp`` moves through::

    created ──► paying ──► succeeded
                  │  └───► failed      the channel refused the order outright
                  └──────► closed      expired or abandoned, closed at the channel

``paying`` is entered before the channel is called, so that a process that dies in
the middle leaves an order the query job will find. Only ``settle_top_up`` moves an
order to ``succeeded``, and only from ``paying``: it credits the wallet from the
channel's clearing account in the same transaction, once per order and once per
channel transaction id. A notification, an active query and reconciliation all
settle through it; a return URL never does.

A payment reported for an order we already closed or failed is not credited: the
order is flagged for reconciliation, where finance decides, because the money did
move at the channel and must not be lost either.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from flask_babel import lazy_gettext
from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    func,
    null,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from campus.database import Base, str_enum, utcnow
from campus.errors import Conflict, InvalidAmount, NotFound
from payments import ledger
from payments.cards import Card, CardStatus, lock_card, require_active
from payments.channels.base import PaymentResult, TradeState
from payments.money import format_yuan
from payments.orders import (
    OrderKind,
    OrderRecord,
    SettleOutcome,
)

logger = logging.getLogger(__name__)


class TopUpState(enum.StrEnum):
    """Where a top-up stands."""

    CREATED = "created"
    """Recorded, the channel not yet asked."""

    PAYING = "paying"
    """The channel has (or may have) the order; the payer has not yet paid, or we
    have not yet heard."""

    SUCCEEDED = "succeeded"
    """Paid and credited to the wallet. Final."""

    CLOSED = "closed"
    """Expired or abandoned, and closed at the channel. Final."""

    FAILED = "failed"
    """The channel refused to create the order. Final."""


class TopUp(Base):
    __tablename__ = "top_ups"
    __table_args__ = (UniqueConstraint("channel", "transaction_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), unique=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    payer_kind: Mapped[str] = mapped_column(String(16))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[TopUpState] = mapped_column(str_enum(TopUpState), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[dt.datetime]
    paid_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    checkout: Mapped[str | None] = mapped_column(Text)
    """What the payer's device was given (JSON): shown again on the result page."""
    failure: Mapped[str | None] = mapped_column(String(255))
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    """Set when the channel reported something we would not act on by ourselves
    (a payment for a closed order, a different amount); reconciliation lists it."""
    review_reason: Mapped[str | None] = mapped_column(String(255))
    claimed_until: Mapped[dt.datetime | None]
    """Lease of the query job that is looking at this order (two machines may run
    it at once; each claims orders before asking the channel)."""

    card: Mapped[Card] = relationship()


class TopUpNotFound(NotFound):
    code = "top_up_not_found"
    title = lazy_gettext("No such top-up")


class TopUpRefused(Conflict):
    code = "top_up_refused"
    title = lazy_gettext("This top-up is not allowed")


@dataclasses.dataclass(frozen=True)
class TopUpLimits:
    minimum_fen: int = 100
    maximum_fen: int = 100_000
    daily_cap_fen: int = 200_000
    """Sum of a card's top-ups (paying or succeeded) per business day."""


def new_out_trade_no(now: dt.datetime) -> str:
    # T + UTC time to the second + 10 hex digits: sortable, unique without a
    # sequence, 25 characters (WeChat allows 6–32, Alipay 64).
    return "T" + now.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(5)


def business_day_bounds(
    moment: dt.datetime, zone: dt.tzinfo
) -> tuple[dt.datetime, dt.datetime]:
    local = moment.astimezone(zone)
    start = dt.datetime.combine(local.date(), dt.time(), tzinfo=zone)
    return start, start + dt.timedelta(days=1)


def open_top_up(
    session: Session,
    card_number: str,
    amount_fen: int,
    *,
    channel: str,
    payer_kind: str,
    limits: TopUpLimits,
    zone: dt.tzinfo,
    now: dt.datetime,
    expires_in: dt.timedelta = dt.timedelta(minutes=15),
) -> TopUp:
    """Check the card and the limits and record a top-up in ``paying``, ready for
    the channel to be asked. The card row is locked so that two top-ups at once
    cannot both fit under the daily cap. The caller commits before calling the
    channel."""
    card = lock_card(session, card_number)
    require_active(card)
    if amount_fen < limits.minimum_fen or amount_fen > limits.maximum_fen:
        raise InvalidAmount(
            lazy_gettext(
                "A top-up is between %(low)s and %(high)s yuan.",
                low=format_yuan(limits.minimum_fen),
                high=format_yuan(limits.maximum_fen),
            ),
            minimum_fen=limits.minimum_fen,
            maximum_fen=limits.maximum_fen,
        )
    start, end = business_day_bounds(now, zone)
    # int(): PostgreSQL sums a bigint column into a numeric.
    today = int(
        session.scalar(
            select(func.coalesce(func.sum(TopUp.amount_fen), 0)).where(
                TopUp.card_id == card.id,
                TopUp.created_at >= start,
                TopUp.created_at < end,
                TopUp.state.in_([TopUpState.PAYING, TopUpState.SUCCEEDED]),
            )
        )
        or 0
    )
    if today + amount_fen > limits.daily_cap_fen:
        raise TopUpRefused(
            lazy_gettext(
                "Today's top-ups would exceed the daily limit of %(cap)s yuan "
                "(%(left)s yuan left).",
                cap=format_yuan(limits.daily_cap_fen),
                left=format_yuan(max(limits.daily_cap_fen - today, 0)),
            ),
            daily_cap_fen=limits.daily_cap_fen,
            remaining_fen=max(limits.daily_cap_fen - today, 0),
        )
    top_up = TopUp(
        out_trade_no=new_out_trade_no(now),
        card=card,
        channel=channel,
        payer_kind=payer_kind,
        amount_fen=amount_fen,
        state=TopUpState.PAYING,
        created_at=now,
        expires_at=now + expires_in,
    )
    session.add(top_up)
    session.flush()
    logger.info(
        "top_up_opened",
        extra={
            "out_trade_no": top_up.out_trade_no,
            "card": card_number,
            "channel": channel,
            "amount_fen": amount_fen,
        },
    )
    return top_up


def find_top_up(session: Session, out_trade_no: str) -> TopUp:
    top_up = session.scalar(select(TopUp).where(TopUp.out_trade_no == out_trade_no))
    if top_up is None:
        raise TopUpNotFound(out_trade_no=out_trade_no)
    return top_up


def lock_top_up(session: Session, out_trade_no: str) -> TopUp:
    top_up = session.scalar(
        select(TopUp)
        .where(TopUp.out_trade_no == out_trade_no)
        .with_for_update(of=TopUp)
        .execution_options(populate_existing=True)
    )
    if top_up is None:
        raise TopUpNotFound(out_trade_no=out_trade_no)
    return top_up


def settle_top_up(
    session: Session,
    channel: str,
    result: PaymentResult,
    *,
    via: str,
    now: dt.datetime | None = None,
) -> SettleOutcome:
    """Settle a top-up the channel says was paid. The one way to ``succeeded``.

    ``via`` says who learned of the payment (``notification``, ``query``,
    ``reconciliation``) for the logs. Runs in the caller's transaction; the order row
    is locked first, so copies racing each other settle once.
    """
    now = now or utcnow()
    top_up = lock_top_up(session, result.out_trade_no)
    log = {"out_trade_no": top_up.out_trade_no, "via": via, "channel": channel}
    if result.state is not TradeState.SUCCEEDED:
        return SettleOutcome.NOT_PAID

    if top_up.channel != channel:
        return _flag(
            top_up, f"paid through {channel}, opened for {top_up.channel}", log
        )
    if result.amount_fen != top_up.amount_fen:
        return _flag(
            top_up,
            f"channel says {result.amount_fen} fen paid, order is {top_up.amount_fen}",
            log,
        )
    if top_up.state is TopUpState.SUCCEEDED:
        if top_up.transaction_id != result.transaction_id:
            return _flag(
                top_up,
                f"second transaction {result.transaction_id} for a settled order",
                log,
            )
        logger.info("top_up_already_settled", extra=log)
        return SettleOutcome.ALREADY
    if top_up.state is not TopUpState.PAYING:
        return _flag(top_up, f"paid after the order was {top_up.state.value}", log)

    # Locked: a close committing meanwhile has checked an empty wallet, and
    # must not find it holding this top-up afterwards.
    card = lock_card(session, top_up.card.number)
    if card.status is CardStatus.CLOSED:
        # The money moved and belongs to the holder; a closed card has no wallet to
        # take it, so finance refunds it from the flag.
        return _flag(top_up, "paid for a card closed meanwhile", log)
    posted = ledger.transfer(
        session,
        kind=ledger.EntryKind.TOP_UP,
        idempotency_ref=f"top_up:{top_up.out_trade_no}",
        source=ledger.clearing_account(session, channel),
        destination=card.wallet,
        amount_fen=top_up.amount_fen,
        order_ref=top_up.out_trade_no,
        memo=f"{channel} {result.transaction_id}",
        created_by=via,
    )
    top_up.state = TopUpState.SUCCEEDED
    top_up.transaction_id = result.transaction_id
    top_up.paid_at = result.paid_at or now
    top_up.finished_at = now
    top_up.entry_id = posted.entry_id
    if card.offline_purse:
        from payments.purse import add_pending_load

        add_pending_load(session, card, top_up.amount_fen, top_up.id)
    session.flush()
    logger.info("top_up_settled", extra={**log, "amount_fen": top_up.amount_fen})
    return SettleOutcome.CREDITED


def _flag(top_up: TopUp, reason: str, log: dict[str, str]) -> SettleOutcome:
    top_up.needs_review = True
    top_up.review_reason = reason[:255]
    logger.warning("top_up_flagged", extra={**log, "reason": reason})
    return SettleOutcome.FLAGGED


def finish_unpaid(
    session: Session,
    out_trade_no: str,
    state: TopUpState,
    reason: str,
    now: dt.datetime | None = None,
) -> TopUp:
    """Close or fail a top-up that was not paid. Does nothing to a final order."""
    if state not in {TopUpState.CLOSED, TopUpState.FAILED}:
        raise ValueError(f"not an unpaid end state: {state}")
    top_up = lock_top_up(session, out_trade_no)
    if top_up.state in {TopUpState.CREATED, TopUpState.PAYING}:
        top_up.state = state
        top_up.failure = reason[:255]
        top_up.finished_at = now or utcnow()
        logger.info(
            "top_up_finished_unpaid",
            extra={
                "out_trade_no": out_trade_no,
                "state": state.value,
                "reason": reason,
            },
        )
    return top_up


def claim_stale(
    session: Session,
    *,
    now: dt.datetime,
    older_than: dt.timedelta,
    lease: dt.timedelta = dt.timedelta(minutes=2),
    limit: int = 100,
) -> list[str]:
    """Claim up to ``limit`` top-ups still paying after ``older_than`` for one run
    of the query job, and return their numbers. A claim is a lease: a job on
    another machine skips claimed orders until the lease ends, and a crashed job's
    orders come back after it. The caller commits the claim before asking the
    channel, so that no row stays locked during the call."""
    candidates = session.scalars(
        select(TopUp.id)
        .where(
            TopUp.state == TopUpState.PAYING,
            # Flagged: the channel has reported its payment and finance decides.
            # Asking again would flag it again, and a hundred such orders at the
            # head of the queue would starve every later one.
            TopUp.needs_review.is_(False),
            TopUp.created_at <= now - older_than,
            (TopUp.claimed_until.is_(None)) | (TopUp.claimed_until < now),
        )
        .order_by(TopUp.created_at)
        .limit(limit)
    ).all()
    claimed = []
    for top_up_id in candidates:
        # Conditional: of two jobs racing for one order, one update matches.
        number = session.scalar(
            update(TopUp)
            .where(
                TopUp.id == top_up_id,
                TopUp.state == TopUpState.PAYING,
                (TopUp.claimed_until.is_(None)) | (TopUp.claimed_until < now),
            )
            .values(claimed_until=now + lease)
            .returning(TopUp.out_trade_no)
        )
        if number is not None:
            claimed.append(number)
    return claimed


def _owns(session: Session, out_trade_no: str) -> bool:
    return (
        session.scalar(select(TopUp.id).where(TopUp.out_trade_no == out_trade_no))
        is not None
    )


_RECORD_STATES = {
    TopUpState.SUCCEEDED: "paid",
    TopUpState.PAYING: "unpaid",
    TopUpState.CREATED: "unpaid",
    TopUpState.CLOSED: "closed",
    TopUpState.FAILED: "failed",
}


def _record(top_up: TopUp) -> OrderRecord:
    return OrderRecord(
        kind="top_up",
        out_trade_no=top_up.out_trade_no,
        channel=top_up.channel,
        state=_RECORD_STATES[top_up.state],
        amount_fen=top_up.amount_fen,
        transaction_id=top_up.transaction_id,
        paid_at=top_up.paid_at,
    )


def _paid(channel: str, start: dt.datetime, end: dt.datetime, *columns: Any) -> Any:
    """The top-ups of a channel paid in ``[start, end)``: ``paid_between`` and
    ``paid_select`` read the same ones."""
    return select(*columns).where(
        TopUp.channel == channel,
        TopUp.state == TopUpState.SUCCEEDED,
        TopUp.paid_at >= start,
        TopUp.paid_at < end,
    )


def _paid_between(
    session: Session, channel: str, start: dt.datetime, end: dt.datetime
) -> Iterator[OrderRecord]:
    # Columns, not entities: a night's run reads a million of these, and an ORM
    # object per row costs about ten times the time and memory of the record.
    rows = session.execute(
        _paid(
            channel,
            start,
            end,
            TopUp.out_trade_no,
            TopUp.amount_fen,
            TopUp.transaction_id,
            TopUp.paid_at,
        ).execution_options(yield_per=10_000)
    )
    for out_trade_no, amount_fen, transaction_id, paid_at in rows:
        yield OrderRecord(
            "top_up",
            out_trade_no,
            channel,
            _RECORD_STATES[TopUpState.SUCCEEDED],
            amount_fen,
            transaction_id,
            paid_at,
        )


def _paid_select(channel: str, start: dt.datetime, end: dt.datetime) -> Any:
    return _paid(
        channel,
        start,
        end,
        TopUp.out_trade_no,
        TopUp.amount_fen,
        TopUp.transaction_id,
        null(),  # a top-up pays no merchant
    )


def _record_of(session: Session, out_trade_no: str) -> OrderRecord | None:
    top_up = session.scalar(select(TopUp).where(TopUp.out_trade_no == out_trade_no))
    return _record(top_up) if top_up is not None else None


def _close_unpaid(session: Session, out_trade_no: str, reason: str) -> None:
    finish_unpaid(session, out_trade_no, TopUpState.CLOSED, reason)


ORDER_KIND = OrderKind(
    "top_up",
    _owns,
    settle_top_up,
    paid_between=_paid_between,
    paid_select=_paid_select,
    record=_record_of,
    close_unpaid=_close_unpaid,
)
