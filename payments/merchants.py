"""Merchants (canteen windows and shops) and their POS terminals.

Each merchant has a payable account (what the university owes it) and a settled
account (what settlement has paid out). Each terminal has its own key id and secret,
with which it signs every request; a disabled terminal is refused.

The terminal secret is stored as issued, because checking an HMAC needs it. Anyone
who can read the database can therefore impersonate a terminal; encrypting the
column under a key held outside the database (a KMS, or a key file only the web
process can read) would close that, and is left for the POS issue's hardening.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import secrets

from flask_babel import lazy_gettext
from sqlalchemy import Boolean, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from campus.database import Base, str_enum, utcnow
from campus.errors import Conflict, NotFound
from payments.ledger import Account, AccountKind, AccountRef, open_account

logger = logging.getLogger(__name__)


class MerchantKind(enum.StrEnum):
    """What sort of place takes the payments."""

    CANTEEN_WINDOW = "canteen_window"
    """One serving window of a canteen, with its own POS and statement."""

    SHOP = "shop"
    """A shop on campus: supermarket, print shop, café."""


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_zh: Mapped[str] = mapped_column(String(64))
    name_en: Mapped[str] = mapped_column(String(128))
    kind: Mapped[MerchantKind] = mapped_column(str_enum(MerchantKind, length=24))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    payable_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id"), unique=True
    )
    settled_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id"), unique=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    payable: Mapped[Account] = relationship(
        foreign_keys=[payable_account_id], lazy="joined"
    )
    settled: Mapped[Account] = relationship(foreign_keys=[settled_account_id])
    terminals: Mapped[list[Terminal]] = relationship(back_populates="merchant")


class Terminal(Base):
    __tablename__ = "terminals"

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    merchant: Mapped[Merchant] = relationship(back_populates="terminals", lazy="joined")


class MerchantNotFound(NotFound):
    code = "merchant_not_found"
    title = lazy_gettext("No such merchant")


def open_merchant(
    session: Session, code: str, name_zh: str, name_en: str, kind: MerchantKind
) -> Merchant:
    if session.scalar(select(Merchant.id).where(Merchant.code == code)) is not None:
        raise Conflict(lazy_gettext("Merchant %(code)s already exists.", code=code))
    merchant = Merchant(
        code=code,
        name_zh=name_zh,
        name_en=name_en,
        kind=kind,
        payable=open_account(
            session, f"payable:{code}", AccountKind.MERCHANT_PAYABLE, f"{code} payable"
        ),
        settled=open_account(
            session, f"settled:{code}", AccountKind.MERCHANT_SETTLED, f"{code} settled"
        ),
    )
    session.add(merchant)
    session.flush()
    logger.info("merchant_opened", extra={"merchant": code})
    return merchant


def find_merchant(session: Session, code: str) -> Merchant:
    merchant = session.scalar(select(Merchant).where(Merchant.code == code))
    if merchant is None:
        raise MerchantNotFound(lazy_gettext("No merchant %(code)s.", code=code))
    return merchant


def payable_of(session: Session, code: str) -> AccountRef:
    """The payable account of an active merchant, in one Core query: what the
    payment path needs, without loading the merchant."""
    accounts = Account.__table__
    merchants = Merchant.__table__
    row = (
        session.connection()
        .execute(
            select(accounts.c.id, accounts.c.code, accounts.c.allow_negative)
            .join_from(
                merchants, accounts, merchants.c.payable_account_id == accounts.c.id
            )
            .where(merchants.c.code == code, merchants.c.active.is_(True))
        )
        .first()
    )
    if row is None:
        raise MerchantNotFound(lazy_gettext("No merchant %(code)s.", code=code))
    return AccountRef(*row)


def add_terminal(session: Session, merchant: Merchant, name: str) -> Terminal:
    terminal = Terminal(
        merchant=merchant,
        key_id="T" + secrets.token_hex(8).upper(),
        secret=secrets.token_urlsafe(32),
        name=name,
    )
    session.add(terminal)
    session.flush()
    logger.info(
        "terminal_added", extra={"merchant": merchant.code, "terminal": terminal.key_id}
    )
    return terminal
