"""The sandbox Alipay's own tables, in its own SQLite file.

These belong to the imitated Alipay, not to the service: they are created with
``create_all`` and are not part of our Alembic migrations.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from campus.database import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime()}


class Payer(Base):
    """A demo Alipay user with a balance, paying by code or on the payer page."""

    __tablename__ = "payers"

    user_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    """2088 and twelve digits, as Alipay's user ids are."""
    demo_id: Mapped[str] = mapped_column(String(16), unique=True)
    """The sandbox-wide id of the demo person (``demo-1``), the same in every
    gateway."""
    logon_id: Mapped[str] = mapped_column(String(64))
    name_zh: Mapped[str] = mapped_column(String(32))
    name_en: Mapped[str] = mapped_column(String(64))
    balance_fen: Mapped[int]
    password_seconds: Mapped[int] = mapped_column(default=0)
    """When above zero, the next code payment waits this long for the payer's
    password (answer 10003); the switch is used up by that payment."""


class PaymentCode(Base):
    """A payment code the payer's app showed: usable once, for a short while."""

    __tablename__ = "payment_codes"

    code: Mapped[str] = mapped_column(String(24), primary_key=True)
    payer_id: Mapped[str] = mapped_column(ForeignKey("payers.user_id"))
    issued_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class Trade(Base):
    """One Alipay trade, as ``alipay.trade.*`` sees it."""

    __tablename__ = "trades"
    __table_args__ = (UniqueConstraint("app_id", "out_trade_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trade_no: Mapped[str] = mapped_column(String(32), unique=True)
    app_id: Mapped[str] = mapped_column(String(32))
    out_trade_no: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    total_fen: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    """WAIT_BUYER_PAY, TRADE_SUCCESS, TRADE_CLOSED or TRADE_FINISHED."""
    visible: Mapped[bool]
    """Precreate, WAP and page trades exist for queries only once the payer has
    scanned the code or opened the cashier, as at Alipay."""
    pay_token: Mapped[str] = mapped_column(String(32), unique=True)
    buyer_id: Mapped[str | None] = mapped_column(String(16))
    buyer_logon_id: Mapped[str | None] = mapped_column(String(64))
    notify_url: Mapped[str | None] = mapped_column(String(512))
    return_url: Mapped[str | None] = mapped_column(String(512))
    quit_url: Mapped[str | None] = mapped_column(String(512))
    passback_params: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]
    paying_until: Mapped[dt.datetime | None]
    """A code payment waiting for the payer's password until then (10003)."""
    paid_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]
    refunded_fen: Mapped[int] = mapped_column(default=0)
    cancel_action: Mapped[str | None] = mapped_column(String(8))


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("trade_id", "out_request_no"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trade_id: Mapped[int] = mapped_column(ForeignKey("trades.id"))
    out_request_no: Mapped[str] = mapped_column(String(64))
    amount_fen: Mapped[int]
    refunded_at: Mapped[dt.datetime]


class AuthCode(Base):
    """A user-authorisation code handed to the merchant's redirect URI."""

    __tablename__ = "auth_codes"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    payer_id: Mapped[str] = mapped_column(ForeignKey("payers.user_id"))
    app_id: Mapped[str] = mapped_column(String(32))
    issued_at: Mapped[dt.datetime]
    used: Mapped[bool] = mapped_column(default=False)
