"""A finance operator closes a discrepancy by trusting the channel or our records.

Nothing is ever edited: where trusting one side means money must move in our books,
the resolution posts a journal entry (``adjustment``) and the discrepancy keeps its
id; where it means nothing moves (the channel will correct itself, or it already
agrees with what we booked), the decision and its reason are what is recorded. Every
resolution names its operator and reason, and the discrepancy cannot be resolved
twice.

What each decision books:

===================  =================  ===========================================
kind                 trust the channel  trust our records
===================  =================  ===========================================
channel_only         clearing → suspense: money the channel holds for us whose
                     owner finance will find (a refund or a late credit follows);
                     an order of ours still waiting for it is closed, so that its
                     late notification is flagged, not credited
                                        nothing: the channel is expected to reverse
ours_only            our entry reversed (the money never arrived), into suspense if
status_mismatch      the wallet has spent it since (a paid-out merchant payable goes
                     negative and its next payouts recover it)
                                        nothing: the channel's line is expected
amount_mismatch      the difference between clearing and suspense
                                        nothing
refund_mismatch,     nothing (recorded)  nothing (recorded)
fee_mismatch
===================  =================  ===========================================
"""

from __future__ import annotations

import enum
import logging

from flask_babel import lazy_gettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from campus.database import utcnow
from campus.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from payments import ledger, orders
from reconciliation.matching import FindingKind
from reconciliation.models import Discrepancy, DiscrepancyStatus

logger = logging.getLogger(__name__)


class Decision(enum.StrEnum):
    TRUST_CHANNEL = "trust_channel"
    TRUST_OURS = "trust_ours"


class DiscrepancyNotFound(NotFound):
    code = "discrepancy_not_found"
    title = lazy_gettext("No such discrepancy")


class AlreadyClosed(Conflict):
    code = "discrepancy_closed"
    title = lazy_gettext("This discrepancy is already closed")


def resolve(
    session: Session,
    discrepancy_id: int,
    decision: Decision,
    *,
    reason: str,
    operator: str,
) -> Discrepancy:
    """Close one open (or held) discrepancy; the caller commits."""
    reason = reason.strip()
    if len(reason) < 4:
        raise InvalidInput(lazy_gettext("Please give a reason."))
    item = session.scalar(
        select(Discrepancy)
        .where(Discrepancy.id == discrepancy_id)
        .with_for_update(of=Discrepancy)
        .execution_options(populate_existing=True)
    )
    if item is None:
        raise DiscrepancyNotFound(discrepancy=discrepancy_id)
    if item.status not in {DiscrepancyStatus.OPEN, DiscrepancyStatus.HELD}:
        raise AlreadyClosed(discrepancy=discrepancy_id, status=item.status.value)

    entry_id = None
    if decision is Decision.TRUST_CHANNEL:
        entry_id = _book_channel_side(session, item, operator, reason)
    item.status = DiscrepancyStatus.RESOLVED
    item.resolution = decision.value
    item.reason = reason[:255]
    item.resolved_by = operator
    item.closed_at = utcnow()
    item.entry_id = entry_id
    session.flush()
    logger.info(
        "discrepancy_resolved",
        extra={
            "discrepancy": item.id,
            "kind": item.kind,
            "out_trade_no": item.out_trade_no,
            "decision": decision.value,
            "operator": operator,
            "entry": entry_id,
        },
    )
    return item


def _book_channel_side(
    session: Session, item: Discrepancy, operator: str, reason: str
) -> int | None:
    clearing = ledger.clearing_account(session, item.channel)
    suspense = ledger.suspense_account(session)
    reference = f"resolution:{item.id}"
    memo = f"{item.kind} {item.out_trade_no or item.key}: {reason}"[:255]
    kind = FindingKind(item.kind)
    if kind is FindingKind.CHANNEL_ONLY and item.channel_amount_fen:
        posted = ledger.transfer(
            session,
            kind=ledger.EntryKind.ADJUSTMENT,
            idempotency_ref=reference,
            source=clearing,
            destination=suspense,
            amount_fen=item.channel_amount_fen,
            order_ref=item.out_trade_no,
            memo=memo,
            created_by=operator,
        )
        # The money is parked for finance now: the order it was for, if it still
        # waits, is ended, so that its late notification or query credits nothing.
        order_kind = (
            orders.order_kind_for(session, item.out_trade_no)
            if item.out_trade_no
            else None
        )
        if order_kind is not None and order_kind.close_unpaid is not None:
            order_kind.close_unpaid(
                session,
                item.out_trade_no or "",
                f"the channel's payment was parked in suspense (discrepancy {item.id})",
            )
        return posted.entry_id
    if kind in {FindingKind.OURS_ONLY, FindingKind.STATUS_MISMATCH}:
        return _reverse_order_entry(session, item, reference, memo, operator)
    if kind is FindingKind.AMOUNT_MISMATCH and item.channel_amount_fen is not None:
        difference = item.channel_amount_fen - (item.our_amount_fen or 0)
        if difference == 0:
            return None
        source, destination = (
            (clearing, suspense) if difference > 0 else (suspense, clearing)
        )
        posted = ledger.transfer(
            session,
            kind=ledger.EntryKind.ADJUSTMENT,
            idempotency_ref=reference,
            source=source,
            destination=destination,
            amount_fen=abs(difference),
            order_ref=item.out_trade_no,
            memo=memo,
            created_by=operator,
        )
        return posted.entry_id
    return None


def _reverse_order_entry(
    session: Session, item: Discrepancy, reference: str, memo: str, operator: str
) -> int | None:
    """Undo what we booked for an order the channel says never paid. When the
    money has been spent since, it comes back through suspense instead, so that
    finance can recover it from the holder or merchant."""
    original = session.scalar(
        select(ledger.JournalEntry)
        .where(
            ledger.JournalEntry.order_ref == item.out_trade_no,
            ledger.JournalEntry.kind.in_(
                [ledger.EntryKind.TOP_UP, ledger.EntryKind.PAYMENT]
            ),
        )
        .order_by(ledger.JournalEntry.id)
    )
    if original is None:
        return None
    undo = [(posting.account, -posting.amount_fen) for posting in original.postings]
    try:
        with session.begin_nested():
            posted = ledger.post_entry(
                session,
                kind=ledger.EntryKind.ADJUSTMENT,
                idempotency_ref=reference,
                postings=undo,
                order_ref=item.out_trade_no,
                memo=memo,
                created_by=operator,
            )
        return posted.entry_id
    except InsufficientFunds:
        suspense = ledger.suspense_account(session)
        rerouted = [
            (suspense if amount < 0 and not account.allow_negative else account, amount)
            for account, amount in undo
        ]
        posted = ledger.post_entry(
            session,
            kind=ledger.EntryKind.ADJUSTMENT,
            idempotency_ref=reference,
            postings=rerouted,
            order_ref=item.out_trade_no,
            memo=(memo + " (spent since: via suspense)")[:255],
            created_by=operator,
        )
        return posted.entry_id
