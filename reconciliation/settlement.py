"""Merchant settlement: what each merchant earned in a day, and paying it out.

A statement is read from the ledger, not from order tables: for each merchant and
business day, the payments into its payable account grouped by where the money came
from (WeChat Pay or Alipay clearing, or a campus wallet), the refunds that left it,
and the channel fees on its payments that day as the bills state them, less what
the bills give back on its refunds (``ChannelFee``, recorded by reconciliation).
The day's fees move from the merchant's payable account to the fees account and
the payout to its settled account, in one journal entry per merchant and day:
re-running a day finds the entry already posted and changes nothing.

The payout is what the merchant is owed, not the day's net alone: everything its
payable received up to the end of the day (payments, refunds, adjustments, from
any day), less everything settlement has already taken from it (payouts and fees
of every earlier statement, whenever they were posted), less the day's fees. A
refund of takings already paid out leaves the payable negative; the next days'
payouts are smaller by it until it is recovered, and a day that is owed nothing
pays nothing (``paid_fen`` 0) while its fees are still charged. Counting what was
already taken at any time, rather than up to the day, means a day settled late
(the nightly catch-up) can never pay out again what a later day already paid.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections import defaultdict

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from campus.database import Base, utcnow
from payments import ledger
from payments.ledger import Account, AccountKind, EntryKind, JournalEntry, Posting
from payments.merchants import Merchant

logger = logging.getLogger(__name__)


class ChannelFee(Base):
    """A channel's fee on one of a merchant's payments, as the day's bill states;
    or, negative, the part of it the channel gives back on one of its refunds."""

    __tablename__ = "channel_fees"
    __table_args__ = (UniqueConstraint("channel", "out_trade_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    day: Mapped[dt.date] = mapped_column(Date, index=True)
    out_trade_no: Mapped[str] = mapped_column(String(64))
    """Our order number; our refund number for a fee given back on a refund."""
    merchant: Mapped[str] = mapped_column(String(32), index=True)
    fee_fen: Mapped[int] = mapped_column(BigInteger)


class MerchantStatement(Base):
    __tablename__ = "merchant_statements"
    __table_args__ = (UniqueConstraint("merchant", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant: Mapped[str] = mapped_column(String(32))
    day: Mapped[dt.date] = mapped_column(Date, index=True)
    gross_by_channel: Mapped[str] = mapped_column(Text)
    """JSON: fen taken per channel (``wechat``, ``alipay``, ``campus``)."""
    gross_fen: Mapped[int] = mapped_column(BigInteger)
    refunds_fen: Mapped[int] = mapped_column(BigInteger)
    fees_fen: Mapped[int] = mapped_column(BigInteger)
    net_fen: Mapped[int] = mapped_column(BigInteger)
    paid_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    """What the payout moved to the merchant's settled account: the net, less what
    the merchant owed from refunds of takings already paid out."""
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


@dataclasses.dataclass(frozen=True)
class Statement:
    merchant: str
    day: dt.date
    gross_by_channel: dict[str, int]
    refunds_fen: int
    fees_fen: int

    @property
    def gross_fen(self) -> int:
        return sum(self.gross_by_channel.values())

    @property
    def net_fen(self) -> int:
        return self.gross_fen - self.refunds_fen - self.fees_fen


def _source_channel(code: str) -> str:
    if code.startswith("clearing:"):
        return code.removeprefix("clearing:")
    return "campus"


def compute_statements(
    session: Session, day: dt.date, start: dt.datetime, end: dt.datetime
) -> list[Statement]:
    """Every merchant's takings, refunds and fees for the business day."""
    payable = aliased(Account)
    other = aliased(Account)
    mine = aliased(Posting)
    theirs = aliased(Posting)
    rows = session.execute(
        select(payable.code, JournalEntry.kind, other.code, func.sum(mine.amount_fen))
        .select_from(mine)
        .join(JournalEntry, JournalEntry.id == mine.entry_id)
        .join(payable, payable.id == mine.account_id)
        .join(theirs, (theirs.entry_id == mine.entry_id) & (theirs.id != mine.id))
        .join(other, other.id == theirs.account_id)
        .where(
            payable.kind == AccountKind.MERCHANT_PAYABLE,
            JournalEntry.kind.in_([EntryKind.PAYMENT, EntryKind.REFUND]),
            JournalEntry.created_at >= start,
            JournalEntry.created_at < end,
        )
        .group_by(payable.code, JournalEntry.kind, other.code)
    ).all()
    gross: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    refunds: dict[str, int] = defaultdict(int)
    for payable_code, kind, other_code, amount in rows:
        merchant = payable_code.removeprefix("payable:")
        if kind is EntryKind.PAYMENT:
            gross[merchant][_source_channel(other_code)] += int(amount)
        else:
            refunds[merchant] += -int(amount)
    fees = dict(
        session.execute(
            select(ChannelFee.merchant, func.sum(ChannelFee.fee_fen))
            .where(ChannelFee.day == day)
            .group_by(ChannelFee.merchant)
        ).all()
    )
    merchants = sorted(set(gross) | set(refunds) | set(fees))
    return [
        Statement(
            merchant=code,
            day=day,
            gross_by_channel=dict(gross.get(code, {})),
            refunds_fen=refunds.get(code, 0),
            fees_fen=int(fees.get(code, 0)),
        )
        for code in merchants
    ]


def lock_payable(session: Session, payable: Account) -> None:
    """Hold the merchant's payable row until the transaction ends (PostgreSQL;
    SQLite serialises writers anyway)."""
    session.execute(
        select(Account.id).where(Account.id == payable.id).with_for_update()
    )


def owed_to(session: Session, payable: Account, end: dt.datetime) -> int:
    """What ``payable``'s merchant is owed at ``end``: every posting to it before
    ``end`` except settlement's, less everything settlement has taken from it."""
    earned = session.scalar(
        select(func.coalesce(func.sum(Posting.amount_fen), 0))
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            Posting.account_id == payable.id,
            JournalEntry.kind != EntryKind.SETTLEMENT,
            JournalEntry.created_at < end,
        )
    )
    taken = session.scalar(
        select(func.coalesce(func.sum(Posting.amount_fen), 0))
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            Posting.account_id == payable.id,
            JournalEntry.kind == EntryKind.SETTLEMENT,
        )
    )
    # int(): PostgreSQL sums a bigint column into a numeric.
    return int(earned) + int(taken)


def settle_merchants(
    session: Session, day: dt.date, start: dt.datetime, end: dt.datetime
) -> list[MerchantStatement]:
    """Write each merchant's statement for the day and post its payout, once."""
    written = []
    for statement in compute_statements(session, day, start, end):
        existing = session.scalar(
            select(MerchantStatement).where(
                MerchantStatement.merchant == statement.merchant,
                MerchantStatement.day == day,
            )
        )
        if existing is not None:
            written.append(existing)
            continue
        merchant = session.scalar(
            select(Merchant).where(Merchant.code == statement.merchant)
        )
        entry_id, paid_fen = None, 0
        if merchant is not None:
            # Locked so that two settlements of one merchant (two days caught up
            # at once) cannot both count the same money as still owed.
            lock_payable(session, merchant.payable)
            fees_fen = statement.fees_fen
            paid_fen = max(0, owed_to(session, merchant.payable, end) - fees_fen)
            postings: list[tuple[ledger.AccountLike, int]] = []
            if paid_fen:
                postings.append((merchant.settled, paid_fen))
            if fees_fen:
                # The merchant bears the channels' fees on its own payments.
                postings.append(
                    (
                        ledger.system_account(
                            session,
                            "fees:merchants",
                            AccountKind.FEES,
                            "channel fees charged to merchants",
                        ),
                        fees_fen,
                    )
                )
            if postings:
                postings.append((merchant.payable, -(paid_fen + fees_fen)))
                entry_id = ledger.post_entry(
                    session,
                    kind=EntryKind.SETTLEMENT,
                    idempotency_ref=f"settlement:{statement.merchant}:{day.isoformat()}",
                    postings=postings,
                    order_ref=f"settle:{statement.merchant}:{day.isoformat()}"[:64],
                    memo=f"settlement of {day.isoformat()}",
                    created_by="reconciliation",
                ).entry_id
        row = MerchantStatement(
            merchant=statement.merchant,
            day=day,
            gross_by_channel=json.dumps(statement.gross_by_channel, sort_keys=True),
            gross_fen=statement.gross_fen,
            refunds_fen=statement.refunds_fen,
            fees_fen=statement.fees_fen,
            net_fen=statement.net_fen,
            paid_fen=paid_fen,
            entry_id=entry_id,
        )
        session.add(row)
        session.flush()
        written.append(row)
        logger.info(
            "merchant_settled",
            extra={
                "merchant": statement.merchant,
                "day": str(day),
                "net_fen": statement.net_fen,
                "paid_fen": paid_fen,
                "entry": entry_id,
            },
        )
    return written


def record_fees(
    session: Session, channel: str, day: dt.date, fees: list[tuple[str, str, int]]
) -> None:
    """Remember each merchant payment's fee, and each refund's fee given back,
    from the bill: (our order or refund number, merchant, fee). Recording again
    changes nothing."""
    known = set(
        session.scalars(
            select(ChannelFee.out_trade_no).where(
                ChannelFee.channel == channel, ChannelFee.day == day
            )
        )
    )
    for out_trade_no, merchant, fee_fen in fees:
        if out_trade_no not in known:
            known.add(out_trade_no)
            session.add(
                ChannelFee(
                    channel=channel,
                    day=day,
                    out_trade_no=out_trade_no,
                    merchant=merchant,
                    fee_fen=fee_fen,
                )
            )
