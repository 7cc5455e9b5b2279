"""Dynamic campus payment codes: 28 digits starting with 7, one use, short-lived.

A code is 27 random decimal digits (about 89 bits) behind the prefix 7. It carries
nothing about the card: the binding to the card lives on the server, keyed by an
HMAC-SHA256 digest of the code under a key derived from the app's secret key, so
that neither the code nor the database alone tells which card a code belongs to,
and a stolen database copy holds no usable code. The student's page asks for a new
code every 30 seconds; a code is accepted for ``campus_code_seconds`` after issue
(60 by default) and only once: ``redeem`` marks it used with a conditional update,
so of two terminals racing on one code exactly one wins.

The length (28) is outside WeChat's (18) and Alipay's (16–24) code lengths and
card numbers' (16), see ``payments.pos.routing``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import re
import secrets

from flask import current_app
from flask_babel import lazy_gettext
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from campus.errors import Conflict, InvalidInput
from campus.logs import mask_code
from payments.pos.models import CampusCode

logger = logging.getLogger(__name__)

CAMPUS_CODE = re.compile(r"7\d{27}")


class CampusCodeUsed(Conflict):
    code = "campus_code_used"
    title = lazy_gettext("This payment code was already used")


class CampusCodeInvalid(InvalidInput):
    code = "campus_code_invalid"
    title = lazy_gettext("This payment code is expired or unknown")


def _key() -> bytes:
    secret = current_app.config["SECRET_KEY"]
    return hmac.new(secret.encode(), b"campus-payment-code", "sha256").digest()


def digest(code: str) -> str:
    return hmac.new(_key(), code.encode(), "sha256").hexdigest()


def issue_code(
    session: Session, card_id: int, *, now: dt.datetime, lifetime_seconds: int
) -> tuple[str, dt.datetime]:
    """A new code for the card and when it stops being accepted. The caller
    commits. Codes of the card past their life are deleted on the way."""
    session.execute(
        delete(CampusCode).where(
            CampusCode.card_id == card_id,
            CampusCode.expires_at < now - dt.timedelta(days=1),
        )
    )
    code = "7" + "".join(secrets.choice("0123456789") for _ in range(27))
    expires_at = now + dt.timedelta(seconds=lifetime_seconds)
    session.add(
        CampusCode(
            digest=digest(code), card_id=card_id, issued_at=now, expires_at=expires_at
        )
    )
    session.flush()
    return code, expires_at


def card_of(session: Session, code: str, *, now: dt.datetime) -> int:
    """The card a live, unused code belongs to, without using it."""
    row = session.execute(
        select(CampusCode.card_id, CampusCode.used_at, CampusCode.expires_at).where(
            CampusCode.digest == digest(code)
        )
    ).first()
    if row is None or row.expires_at < now:
        raise CampusCodeInvalid(code_masked=mask_code(code))
    if row.used_at is not None:
        raise CampusCodeUsed(code_masked=mask_code(code))
    return int(row.card_id)


def redeem(session: Session, code: str, *, now: dt.datetime, out_trade_no: str) -> int:
    """Use the code once for ``out_trade_no``; the card's id. In the caller's
    transaction: a competing redeemer waits on the row and then matches nothing."""
    card_id = session.scalar(
        update(CampusCode)
        .where(
            CampusCode.digest == digest(code),
            CampusCode.used_at.is_(None),
            CampusCode.expires_at >= now,
        )
        .values(used_at=now, out_trade_no=out_trade_no)
        .returning(CampusCode.card_id)
    )
    if card_id is None:
        card_of(session, code, now=now)  # raises the precise reason
        raise CampusCodeUsed(code_masked=mask_code(code))
    logger.info(
        "campus_code_redeemed",
        extra={"code": mask_code(code), "out_trade_no": out_trade_no},
    )
    return int(card_id)
