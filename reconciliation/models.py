"""What reconciliation keeps: one run per channel and day, and its discrepancies."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from campus.database import Base, str_enum, utcnow


class RunState(enum.StrEnum):
    """Where one channel's day stands."""

    RUNNING = "running"
    """A run holds the day (its lease has not run out)."""

    FAILED = "failed"
    """The bill could not be trusted or read; nothing was changed. Run again."""

    FINISHED = "finished"
    """Every line and order is sorted; re-running changes nothing."""


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"
    __table_args__ = (UniqueConstraint("channel", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    day: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[RunState] = mapped_column(str_enum(RunState))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    locked_until: Mapped[dt.datetime | None]
    bill_sha256: Mapped[str | None] = mapped_column(String(64))
    bill_path: Mapped[str | None] = mapped_column(String(255))
    lines: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[str | None] = mapped_column(Text)
    """JSON: findings by kind, repairs, held and released items."""
    error: Mapped[str | None] = mapped_column(Text)


class DiscrepancyStatus(enum.StrEnum):
    """What is being done about a discrepancy."""

    OPEN = "open"
    """Waits for a finance operator."""

    HELD = "held"
    """Ours only, and its channel line may still come in a later day's bill (an
    order paid just before midnight); becomes open when the holding days pass."""

    MATCHED_LATE = "matched_late"
    """A held item whose line arrived in a later bill. Closed."""

    REPAIRED = "repaired"
    """Settled by reconciliation itself (a lost notification). Closed."""

    RESOLVED = "resolved"
    """Closed by a finance operator with a reason."""


class Discrepancy(Base):
    __tablename__ = "discrepancies"
    __table_args__ = (UniqueConstraint("channel", "day", "kind", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    day: Mapped[dt.date] = mapped_column(Date, index=True)
    kind: Mapped[str] = mapped_column(String(24))
    key: Mapped[str] = mapped_column(String(64))
    status: Mapped[DiscrepancyStatus] = mapped_column(
        str_enum(DiscrepancyStatus), index=True
    )
    repairable: Mapped[bool] = mapped_column(Boolean, default=False)
    order_kind: Mapped[str | None] = mapped_column(String(24))
    merchant: Mapped[str | None] = mapped_column(String(32))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    out_refund_no: Mapped[str | None] = mapped_column(String(64))
    our_state: Mapped[str | None] = mapped_column(String(24))
    channel_state: Mapped[str | None] = mapped_column(String(24))
    our_amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    channel_amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    bill_line: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(255), default="")
    hold_until: Mapped[dt.date | None] = mapped_column(Date)
    matched_on: Mapped[dt.date | None] = mapped_column(Date)
    """For a held item that matched late: the day whose bill listed it, so that
    that day's run can count it again however many times it is re-run."""
    found_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    resolution: Mapped[str | None] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(String(255))
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    entry_id: Mapped[int | None] = mapped_column(Integer)


class OrderReview(Base):
    """A finance operator's word that an order payments flagged ``needs_review``
    was looked at: who, when, what they found. The flag itself belongs to
    payments and stays; an order is listed for review again when payments flags
    it for a reason no review has covered. Rows are only ever added."""

    __tablename__ = "order_reviews"
    __table_args__ = (UniqueConstraint("kind", "out_trade_no", "flag_reason"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    """``top_up`` or ``pos_payment``."""
    out_trade_no: Mapped[str] = mapped_column(String(64), index=True)
    flag_reason: Mapped[str] = mapped_column(String(255))
    """The flag's reason as it stood when reviewed."""
    note: Mapped[str] = mapped_column(String(255))
    reviewed_by: Mapped[str] = mapped_column(String(64))
    reviewed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
