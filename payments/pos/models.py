"""The POS tables: payments, refunds, remembered nonces, campus codes, card PINs
and cashiers' merchants.

A ``PosPayment`` moves through::

    paying ──► succeeded ──(refunds)──► refunded in part or in full
      │  ├───► failed       the channel refused (its reason kept), or the wallet
      │  │                  could not pay (card, PIN, balance, used code)
      │  └───► reversed     unknown at the deadline, then reversed (WeChat) or
      │                     cancelled (Alipay): no money moved in the end
    awaiting ──► paying     an aggregated-QR order waiting for its payer

``succeeded`` is reached only through ``service.settle_payment``, which posts the
journal entry in the same transaction. A ``PosRefund`` moves
``processing ──► succeeded | failed`` and is settled through
``refunds.settle_refund``, once.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from campus.database import Base, str_enum, utcnow
from payments.merchants import Merchant, Terminal


class PaymentState(enum.StrEnum):
    """Where a POS payment stands."""

    AWAITING = "awaiting"
    """An aggregated-QR order: shown to the payer, no channel chosen yet."""

    PAYING = "paying"
    """The channel has (or may have) the payment; the outcome is not known."""

    SUCCEEDED = "succeeded"
    """Paid, and the merchant's payable credited. Refunds may follow."""

    FAILED = "failed"
    """Definitely not paid: the channel or the wallet refused. Final."""

    REVERSED = "reversed"
    """Unknown at the deadline and then reversed / cancelled at the channel:
    whatever moved went back. Final."""


class PaymentSource(enum.StrEnum):
    CODE = "code"
    """A payment code scanned by the terminal."""

    TAP = "tap"
    """A physical campus card tapped on the terminal."""

    QR = "qr"
    """The payer scanned the merchant's or the order's aggregated QR."""


class RefundState(enum.StrEnum):
    PROCESSING = "processing"
    """Asked of the channel (or about to be); the amount is reserved."""

    SUCCEEDED = "succeeded"
    """Money given back and the reverse entry posted. Final."""

    FAILED = "failed"
    """The channel refused, or the wallet's card was no longer active; the
    reserved amount is free again. Final."""


class RefundDestination(enum.StrEnum):
    ORIGINAL = "original"
    """Back the way it came: the channel, or the wallet for campus payments."""

    WALLET = "wallet"
    """Onto a campus card's wallet, whatever the payment's channel."""


class PosPayment(Base):
    __tablename__ = "pos_payments"
    __table_args__ = (
        UniqueConstraint("terminal_id", "terminal_order_no"),
        UniqueConstraint("terminal_id", "idempotency_key"),
        UniqueConstraint("channel", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), unique=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"))
    terminal_order_no: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 of the terminal's request body: the same key or order number with
    a different body is refused."""
    source: Mapped[PaymentSource] = mapped_column(str_enum(PaymentSource))
    channel: Mapped[str | None] = mapped_column(String(16))
    code_masked: Mapped[str | None] = mapped_column(String(32))
    """The scanned code as ``campus.logs.mask_code`` leaves it; never the code."""
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    """Refunds succeeded or in progress: never more than ``amount_fen``."""
    state: Mapped[PaymentState] = mapped_column(str_enum(PaymentState), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(255))
    qr_token: Mapped[str | None] = mapped_column(String(32), unique=True)
    description: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    deadline_at: Mapped[dt.datetime | None]
    paid_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))
    claimed_until: Mapped[dt.datetime | None]
    """Lease of the stale-payment job (or a live request) working on it."""
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    review_reason: Mapped[str | None] = mapped_column(String(255))

    merchant: Mapped[Merchant] = relationship()
    terminal: Mapped[Terminal | None] = relationship()


class PosRefund(Base):
    __tablename__ = "pos_refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    out_refund_no: Mapped[str] = mapped_column(String(32), unique=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("pos_payments.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    destination: Mapped[RefundDestination] = mapped_column(str_enum(RefundDestination))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    """The wallet credited, for refunds to a wallet."""
    channel: Mapped[str] = mapped_column(String(16))
    """Where the money goes back through: ``wechat``, ``alipay`` or ``campus``."""
    state: Mapped[RefundState] = mapped_column(
        str_enum(RefundState, name="posrefundstate"), index=True
    )
    refund_id: Mapped[str | None] = mapped_column(String(64))
    """The channel's refund number."""
    reason: Mapped[str | None] = mapped_column(String(255))
    operator: Mapped[str] = mapped_column(String(64))
    failure: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entries.id"))

    payment: Mapped[PosPayment] = relationship()


class TerminalNonce(Base):
    """A signed request's nonce, remembered until its timestamp can no longer
    pass the freshness check; the primary key refuses a second use."""

    __tablename__ = "pos_terminal_nonces"

    terminal_id: Mapped[int] = mapped_column(
        ForeignKey("terminals.id", ondelete="CASCADE"), primary_key=True
    )
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class CampusCode(Base):
    """An issued campus payment code, kept only as a keyed digest."""

    __tablename__ = "pos_campus_codes"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), index=True)
    issued_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    used_at: Mapped[dt.datetime | None]
    out_trade_no: Mapped[str | None] = mapped_column(String(32))


class CardPin(Base):
    """A card's payment PIN, Argon2-hashed; wrong tries lock it for a while."""

    __tablename__ = "pos_card_pins"

    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), primary_key=True)
    pin_hash: Mapped[str] = mapped_column(String(256))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CashierMerchant(Base):
    """Which merchants a cashier works for: they refund those payments only."""

    __tablename__ = "pos_cashier_merchants"

    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True
    )
    merchant_id: Mapped[int] = mapped_column(
        ForeignKey("merchants.id"), primary_key=True
    )
