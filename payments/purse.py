"""Offline chip purses: a settled top-up waits as a pending load until a terminal
writes it onto the card.

Some campus cards keep a balance on the chip, spent at terminals without a network.
For such a card a settled top-up credits the wallet as usual and also becomes a
``PurseLoad``; when the holder taps the card, the terminal asks for the card's
pending loads, writes the amount to the chip, and confirms what it wrote. Each
confirmation moves that much from the wallet to the card's purse account as one
journal entry.

A confirmation carries the terminal's own id for it, so a terminal that retries
after a lost answer is told the first result instead of loading twice; and no
confirmation can claim more than is still pending on its load.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging

from flask_babel import lazy_gettext
from sqlalchemy import BigInteger, ForeignKey, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from campus.database import Base, str_enum, utcnow
from campus.errors import Conflict, InvalidAmount, NotFound
from payments import ledger
from payments.cards import Card, CardStatus, find_card
from payments.ledger import AccountKind

logger = logging.getLogger(__name__)


class LoadState(enum.StrEnum):
    """How much of a load has reached the chip."""

    PENDING = "pending"
    """Nothing written yet."""

    PARTLY_LOADED = "partly_loaded"
    """Some written (a chip near its ceiling takes less); the rest waits."""

    LOADED = "loaded"
    """All written. Final."""


class PurseLoad(Base):
    __tablename__ = "purse_loads"

    id: Mapped[int] = mapped_column(primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), index=True)
    top_up_id: Mapped[int | None] = mapped_column(ForeignKey("top_ups.id"), unique=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    loaded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[LoadState] = mapped_column(str_enum(LoadState, length=16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    card: Mapped[Card] = relationship()

    @property
    def remaining_fen(self) -> int:
        return self.amount_fen - self.loaded_fen


class LoadNotFound(NotFound):
    code = "load_not_found"
    title = lazy_gettext("No such pending load")


class LoadExceeded(Conflict):
    code = "load_exceeded"
    title = lazy_gettext("More than is pending on this load")


def purse_account(session: Session, card: Card) -> ledger.Account:
    return ledger.system_account(
        session,
        f"purse:{card.number}",
        AccountKind.CARD_PURSE,
        f"chip purse of card {card.number}",
    )


def add_pending_load(
    session: Session, card: Card, amount_fen: int, top_up_id: int | None
) -> PurseLoad:
    load = PurseLoad(
        card=card,
        top_up_id=top_up_id,
        amount_fen=amount_fen,
        loaded_fen=0,
        state=LoadState.PENDING,
    )
    session.add(load)
    session.flush()
    logger.info(
        "purse_load_pending",
        extra={"card": card.number, "load": load.id, "amount_fen": amount_fen},
    )
    return load


def pending_loads(session: Session, card_number: str) -> list[PurseLoad]:
    """The loads a terminal may write to the card's chip: none while the card
    is frozen, lost or closed, whose holder may not be the one tapping it. (A
    load already written before that is still confirmed: ``confirm_load``.)"""
    card = find_card(session, card_number)
    if card.status is not CardStatus.ACTIVE:
        logger.info(
            "purse_loads_withheld",
            extra={"card": card_number, "status": card.status.value},
        )
        return []
    return list(
        session.scalars(
            select(PurseLoad)
            .where(
                PurseLoad.card_id == card.id,
                PurseLoad.state != LoadState.LOADED,
            )
            .order_by(PurseLoad.id)
        )
    )


def confirm_load(
    session: Session,
    card_number: str,
    load_id: int,
    amount_fen: int,
    *,
    confirmation_id: str,
    terminal: str,
) -> PurseLoad:
    """Record that ``terminal`` wrote ``amount_fen`` of load ``load_id`` onto the
    chip. Idempotent per ``confirmation_id``: the same confirmation again returns
    the load and moves nothing. Raises ``LoadExceeded`` for more than remains."""
    card = find_card(session, card_number)
    load = session.scalar(
        select(PurseLoad)
        .where(PurseLoad.id == load_id, PurseLoad.card_id == card.id)
        .with_for_update(of=PurseLoad)
        .execution_options(populate_existing=True)
    )
    if load is None:
        raise LoadNotFound(card=card_number, load=load_id)
    reference = f"purse_load:{card.number}:{confirmation_id}"[:128]
    if ledger.find_entry_id(session, reference) is not None:
        logger.info(
            "purse_load_confirmation_repeated",
            extra={"card": card_number, "load": load_id, "terminal": terminal},
        )
        return load
    if amount_fen <= 0:
        raise InvalidAmount(lazy_gettext("The amount must be more than zero."))
    if amount_fen > load.remaining_fen:
        raise LoadExceeded(
            lazy_gettext(
                "Only %(left)s fen are pending on this load.", left=load.remaining_fen
            ),
            remaining_fen=load.remaining_fen,
        )
    ledger.transfer(
        session,
        kind=ledger.EntryKind.PURSE_LOAD,
        idempotency_ref=reference,
        source=card.wallet,
        destination=purse_account(session, card),
        amount_fen=amount_fen,
        order_ref=f"load:{load.id}",
        memo=f"written by terminal {terminal}",
        created_by=f"terminal:{terminal}",
    )
    load.loaded_fen += amount_fen
    load.state = (
        LoadState.LOADED if load.remaining_fen == 0 else LoadState.PARTLY_LOADED
    )
    load.updated_at = utcnow()
    session.flush()
    logger.info(
        "purse_loaded",
        extra={
            "card": card_number,
            "load": load.id,
            "amount_fen": amount_fen,
            "terminal": terminal,
        },
    )
    return load
