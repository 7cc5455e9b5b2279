"""The card PIN asked for campus payments above a set amount.

Kept in its own table (``pos_card_pins``) beside the card, hashed with Argon2 like
operators' passwords. Five wrong PINs in a row lock PIN payments for 15 minutes, so
that a found card cannot be tried through all 10⁶ PINs at a till.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask_babel import lazy_gettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from campus.auth import password_hasher
from campus.errors import Conflict, Forbidden, InvalidInput
from payments.pos.models import CardPin

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
LOCK = dt.timedelta(minutes=15)


class PinRequired(Forbidden):
    code = "pin_required"
    title = lazy_gettext("Please enter the card PIN")


class PinWrong(Forbidden):
    code = "pin_wrong"
    title = lazy_gettext("Wrong card PIN")


class PinLocked(Conflict):
    code = "pin_locked"
    title = lazy_gettext("Too many wrong PINs; try again later")


def set_pin(session: Session, card_id: int, pin: str, now: dt.datetime) -> None:
    if not (pin.isdigit() and len(pin) == 6):
        raise InvalidInput(lazy_gettext("A card PIN is six digits."))
    row = session.get(CardPin, card_id)
    if row is None:
        row = CardPin(card_id=card_id, pin_hash="")
        session.add(row)
    row.pin_hash = password_hasher.hash(pin)
    row.failed_attempts = 0
    row.locked_until = None
    row.changed_at = now
    session.flush()


def check_pin(
    session: Session, card_id: int, pin: str | None, now: dt.datetime
) -> None:
    """Raise unless ``pin`` is the card's PIN. Counts wrong tries in the caller's
    transaction: the caller commits even when this raises ``PinWrong``."""
    if not pin:
        raise PinRequired()
    row = session.scalar(
        select(CardPin).where(CardPin.card_id == card_id).with_for_update()
    )
    if row is None:
        raise PinRequired(lazy_gettext("This card has no PIN yet; set one first."))
    if row.locked_until is not None and row.locked_until > now:
        raise PinLocked()
    try:
        password_hasher.verify(row.pin_hash, pin)
    except Exception:  # argon2's VerificationError and InvalidHashError alike
        row.failed_attempts += 1
        if row.failed_attempts >= MAX_ATTEMPTS:
            row.failed_attempts = 0
            row.locked_until = now + LOCK
        logger.warning("card_pin_wrong", extra={"card_id": card_id})
        raise PinWrong() from None
    row.failed_attempts = 0
