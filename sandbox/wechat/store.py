"""The sandbox WeChat Pay's own records: payers, payment codes, orders, refunds and
OAuth codes, in its own SQLite file.

It is a foreign system: its tables are made with ``create_all`` on first run and
never appear in our migrations.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import DateTime, ForeignKey, String, Text, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTC(TypeDecorator[dt.datetime]):
    """SQLite keeps no zone: store naive UTC, hand back aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class TradeState(enum.StrEnum):
    """``trade_state`` as the real API reports it."""

    NOTPAY = "NOTPAY"
    USERPAYING = "USERPAYING"
    SUCCESS = "SUCCESS"
    REFUND = "REFUND"
    CLOSED = "CLOSED"
    REVOKED = "REVOKED"
    PAYERROR = "PAYERROR"


TRADE_STATE_DESC = {
    TradeState.NOTPAY: "订单未支付",
    TradeState.USERPAYING: "用户支付中（付款码支付）",
    TradeState.SUCCESS: "支付成功",
    TradeState.REFUND: "转入退款",
    TradeState.CLOSED: "已关闭",
    TradeState.REVOKED: "已撤销（付款码支付）",
    TradeState.PAYERROR: "支付失败（其他原因，如银行返回失败）",
}


class Payer(Base):
    __tablename__ = "payers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    name_en: Mapped[str] = mapped_column(String(64))
    balance_fen: Mapped[int]
    password_seconds: Mapped[int] = mapped_column(default=0)
    """The next code payment waits this long for the password (0: no password)."""


class PaymentCode(Base):
    __tablename__ = "payment_codes"

    code: Mapped[str] = mapped_column(String(18), primary_key=True)
    payer_id: Mapped[str] = mapped_column(ForeignKey("payers.id"))
    issued_at: Mapped[dt.datetime] = mapped_column(UTC)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTC)


class Order(Base):
    __tablename__ = "orders"

    out_trade_no: Mapped[str] = mapped_column(String(32), primary_key=True)
    appid: Mapped[str] = mapped_column(String(32))
    mchid: Mapped[str] = mapped_column(String(32))
    trade_type: Mapped[str] = mapped_column(String(16))
    """JSAPI, NATIVE, APP, MWEB (H5) or MICROPAY (code payment)."""
    description: Mapped[str] = mapped_column(String(127))
    attach: Mapped[str | None] = mapped_column(String(128))
    notify_url: Mapped[str | None] = mapped_column(Text)
    total_fen: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    prepay_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    request_body: Mapped[str] = mapped_column(Text)
    """The creating request, to answer a repeat with the same prepay id."""
    transaction_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    payer_id: Mapped[str | None] = mapped_column(ForeignKey("payers.id"))
    openid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTC)
    expires_at: Mapped[dt.datetime] = mapped_column(UTC)
    success_at: Mapped[dt.datetime | None] = mapped_column(UTC)
    password_until: Mapped[dt.datetime | None] = mapped_column(UTC)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTC)
    was_paid: Mapped[bool] = mapped_column(default=False)
    """Money moved at some point (so a REVOKED order is still on the bill)."""


class Refund(Base):
    __tablename__ = "refunds"

    out_refund_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    refund_id: Mapped[str] = mapped_column(String(32), unique=True)
    out_trade_no: Mapped[str] = mapped_column(ForeignKey("orders.out_trade_no"))
    amount_fen: Mapped[int]
    reason: Mapped[str | None] = mapped_column(String(80))
    notify_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    """PROCESSING until ``success_due``, then SUCCESS."""
    created_at: Mapped[dt.datetime] = mapped_column(UTC)
    success_due: Mapped[dt.datetime] = mapped_column(UTC)


class OAuthCode(Base):
    __tablename__ = "oauth_codes"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    appid: Mapped[str] = mapped_column(String(32))
    payer_id: Mapped[str] = mapped_column(ForeignKey("payers.id"))
    scope: Mapped[str] = mapped_column(String(32))
    issued_at: Mapped[dt.datetime] = mapped_column(UTC)
    used: Mapped[bool] = mapped_column(default=False)


def open_store(path: str) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30}
    )
    Base.metadata.create_all(engine)
    return engine
