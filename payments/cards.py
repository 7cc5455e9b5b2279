"""Campus cards: a person's card, its wallet, and its status history.

A card moves between states only along the transitions in ``TRANSITIONS``; each
change is written to ``card_status_changes`` with who made it and why, in the same
transaction as the change. Status changes and payments lock the card row through
``lock_card`` so that a freeze and a payment cannot interleave.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import secrets
from typing import NamedTuple

from flask_babel import lazy_gettext
from sqlalchemy import Boolean, ForeignKey, String, bindparam, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from campus.database import Base, str_enum, utcnow
from campus.driver import DriverStatement
from campus.errors import CardNotActive, Conflict, InvalidInput, NotFound
from campus.people import Person
from payments.ledger import Account, AccountKind, AccountRef, open_account
from payments.money import format_yuan

logger = logging.getLogger(__name__)


class CardStatus(enum.StrEnum):
    """Where a card stands."""

    ACTIVE = "active"
    """Usable: it can be topped up and can pay."""

    FROZEN = "frozen"
    """Stopped for now by the holder or an operator; the balance is kept."""

    LOST = "lost"
    """Reported lost; like frozen, but a replacement card is expected."""

    CLOSED = "closed"
    """Ended for good, with a zero balance. Nothing moves it again."""


TRANSITIONS: dict[CardStatus, frozenset[CardStatus]] = {
    CardStatus.ACTIVE: frozenset(
        {CardStatus.FROZEN, CardStatus.LOST, CardStatus.CLOSED}
    ),
    CardStatus.FROZEN: frozenset(
        {CardStatus.ACTIVE, CardStatus.LOST, CardStatus.CLOSED}
    ),
    CardStatus.LOST: frozenset({CardStatus.ACTIVE, CardStatus.CLOSED}),
    CardStatus.CLOSED: frozenset(),
}


class Card(Base):
    __tablename__ = "cards"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    status: Mapped[CardStatus] = mapped_column(str_enum(CardStatus))
    wallet_account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id"), unique=True
    )
    offline_purse: Mapped[bool] = mapped_column(Boolean, default=False)
    """The card keeps a balance on its chip, loaded at a terminal (issue 4)."""
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    person: Mapped[Person] = relationship()
    wallet: Mapped[Account] = relationship(lazy="joined")
    history: Mapped[list[CardStatusChange]] = relationship(
        back_populates="card", order_by="CardStatusChange.id"
    )

    @property
    def balance_fen(self) -> int:
        return self.wallet.balance_fen

    def __repr__(self) -> str:
        return f"<Card {self.number} {self.status.value}>"


class CardStatusChange(Base):
    __tablename__ = "card_status_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), index=True)
    from_status: Mapped[CardStatus | None] = mapped_column(
        str_enum(CardStatus, name="from_status")
    )
    to_status: Mapped[CardStatus] = mapped_column(
        str_enum(CardStatus, name="to_status")
    )
    reason: Mapped[str] = mapped_column(String(255))
    changed_by: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    card: Mapped[Card] = relationship(back_populates="history")


class CardNotFound(NotFound):
    code = "card_not_found"
    title = lazy_gettext("No such card")


class InvalidTransition(Conflict):
    code = "invalid_card_transition"
    title = lazy_gettext("The card cannot change to that status")


def find_card(session: Session, number: str) -> Card:
    card = session.scalar(select(Card).where(Card.number == number))
    if card is None:
        raise CardNotFound(lazy_gettext("No card numbered %(number)s.", number=number))
    return card


def lock_card(session: Session, number: str) -> Card:
    """The card, with its row locked until the transaction ends (PostgreSQL; SQLite
    already holds the database's write lock)."""
    card = session.scalar(
        select(Card)
        .where(Card.number == number)
        .with_for_update(of=Card)
        .execution_options(populate_existing=True)
    )
    if card is None:
        raise CardNotFound(lazy_gettext("No card numbered %(number)s.", number=number))
    return card


class LockedCard(NamedTuple):
    """A card row locked for a payment, with what the ledger needs of its wallet."""

    id: int
    number: str
    status: CardStatus
    wallet: AccountRef


# Run on the driver (``campus.driver``): the first statement of every payment.
_LOCK_FOR_PAYMENT = DriverStatement(
    select(
        Card.__table__.c.id,
        Card.__table__.c.status,
        Account.__table__.c.id,
        Account.__table__.c.code,
        Account.__table__.c.allow_negative,
    )
    .join_from(
        Card.__table__,
        Account.__table__,
        Card.__table__.c.wallet_account_id == Account.__table__.c.id,
    )
    .with_for_update(of=Card.__table__)
    .where(Card.__table__.c.number == bindparam("number"))
)


def lock_card_for_payment(session: Session, number: str) -> LockedCard:
    """Like ``lock_card``, in one Core query: the payment path's first statement."""
    row = _LOCK_FOR_PAYMENT.first(session.connection(), {"number": number})
    if row is None:
        raise CardNotFound(lazy_gettext("No card numbered %(number)s.", number=number))
    card_id, status, wallet_id, wallet_code, allow_negative = row
    return LockedCard(
        card_id,
        number,
        CardStatus(status),
        # SQLite's driver gives a boolean as 0 or 1.
        AccountRef(wallet_id, wallet_code, bool(allow_negative)),
    )


def cards_of(session: Session, person: Person) -> list[Card]:
    return list(
        session.scalars(
            select(Card).where(Card.person_id == person.id).order_by(Card.id)
        )
    )


def new_card_number() -> str:
    # Sixteen digits starting 9: longer than a student number, and outside the
    # ranges the channels use for their payment codes.
    return "9" + "".join(secrets.choice("0123456789") for _ in range(15))


def open_card(
    session: Session,
    person: Person,
    *,
    actor: str,
    number: str | None = None,
    offline_purse: bool = False,
) -> Card:
    number = number or new_card_number()
    if not number.isdigit() or not 6 <= len(number) <= 20:
        raise InvalidInput(lazy_gettext("A card number is 6 to 20 digits."))
    if session.scalar(select(Card.id).where(Card.number == number)) is not None:
        raise Conflict(lazy_gettext("Card %(number)s already exists.", number=number))
    wallet = open_account(
        session, f"wallet:{number}", AccountKind.WALLET, f"wallet of card {number}"
    )
    card = Card(
        number=number,
        person=person,
        status=CardStatus.ACTIVE,
        wallet=wallet,
        offline_purse=offline_purse,
    )
    session.add(card)
    session.flush()
    session.add(
        CardStatusChange(
            card=card,
            from_status=None,
            to_status=CardStatus.ACTIVE,
            reason="opened",
            changed_by=actor,
        )
    )
    logger.info("card_opened", extra={"card": number, "person": person.number})
    return card


def change_status(
    session: Session, number: str, to: CardStatus, *, reason: str, actor: str
) -> Card:
    """Move a card to ``to``, recording who and why. Closing needs a zero balance:
    money left on a card is refunded first, never dropped."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput(lazy_gettext("Say why the card's status changes."))
    card = lock_card(session, number)
    if to not in TRANSITIONS[card.status]:
        raise InvalidTransition(
            lazy_gettext(
                "A %(status)s card cannot become %(to)s.",
                status=card.status.value,
                to=to.value,
            ),
            card=number,
        )
    if to is CardStatus.CLOSED and card.balance_fen != 0:
        raise InvalidTransition(
            lazy_gettext("Refund the card's balance before closing it."),
            card=number,
            balance_fen=card.balance_fen,
        )
    if to is CardStatus.CLOSED:
        # Money loaded onto the chip is held in the card's purse account until
        # the chip spends it: a closed card could never give it back.
        on_chip = session.scalar(
            select(Account.balance_fen).where(Account.code == f"purse:{number}")
        )
        if on_chip:
            raise InvalidTransition(
                lazy_gettext(
                    "%(yuan)s yuan is still on the card's chip: spend or refund it "
                    "before closing the card.",
                    yuan=format_yuan(on_chip),
                ),
                card=number,
                purse_fen=on_chip,
            )
    session.add(
        CardStatusChange(
            card=card,
            from_status=card.status,
            to_status=to,
            reason=reason[:255],
            changed_by=actor,
        )
    )
    logger.info(
        "card_status_changed",
        extra={"card": number, "from": card.status.value, "to": to.value, "by": actor},
    )
    card.status = to
    session.flush()
    return card


def require_active(card: Card | LockedCard) -> None:
    if card.status is not CardStatus.ACTIVE:
        raise CardNotActive(
            lazy_gettext("This card is %(status)s.", status=status_label(card.status)),
            card=card.number,
            card_status=card.status.value,
        )


def status_label(status: CardStatus) -> str:
    labels = {
        CardStatus.ACTIVE: lazy_gettext("active"),
        CardStatus.FROZEN: lazy_gettext("frozen"),
        CardStatus.LOST: lazy_gettext("reported lost"),
        CardStatus.CLOSED: lazy_gettext("closed"),
    }
    return str(labels[status])
