"""Amounts in integer fen, parsed and printed exactly.

Every amount inside the service is an ``int`` of fen (hundredths of a yuan). Yuan
strings exist only at the edges: what a person types, what a channel's API or bill
says. Parsing never goes through ``float``.
"""

from __future__ import annotations

import re

from flask_babel import lazy_gettext

from campus.errors import InvalidAmount

# A single payment or top-up above a million yuan is a typo or an attack.
ABSURD_FEN = 100_000_000

_FULL_WIDTH = str.maketrans(
    {chr(0xFF10 + digit): str(digit) for digit in range(10)}
    | {"．": ".", "￥": "¥", "－": "-", "\u3000": " "}
)
_YUAN = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]*))?")


def parse_fen(
    text: str | int, *, allow_zero: bool = False, maximum: int = ABSURD_FEN
) -> int:
    """Parse a yuan amount such as ``12.5``, ``12.50`` or ``¥12.50`` into fen.

    An ``int`` is taken as fen already. Raises ``InvalidAmount`` for anything that
    is not an exact, positive (or zero, when allowed) amount up to ``maximum``.
    """
    if isinstance(text, bool):
        raise InvalidAmount(lazy_gettext("An amount must be a number."))
    if isinstance(text, int):
        return check_fen(text, allow_zero=allow_zero, maximum=maximum)
    # What a Chinese input method types in full width (１２．５０, ￥, －) is read
    # as ASCII; nothing else is folded, so other scripts' digits (٥٠) and look-alikes
    # such as superscripts (1²) or circled digits (①) are refused by [0-9].
    cleaned = text.translate(_FULL_WIDTH).strip().lstrip("¥").strip()
    if cleaned.startswith("-"):
        raise InvalidAmount(lazy_gettext("An amount cannot be negative."))
    match = _YUAN.fullmatch(cleaned)
    if match is None:
        raise InvalidAmount(
            lazy_gettext("Not an amount: %(text)s", text=text[:32]),
        )
    fraction = match["fraction"] or ""
    if len(fraction) > 2:
        raise InvalidAmount(lazy_gettext("An amount has at most two decimals (fen)."))
    if len(match["whole"]) > 12:
        raise InvalidAmount(lazy_gettext("The amount is too large."))
    fen = int(match["whole"]) * 100 + int(fraction.ljust(2, "0"))
    return check_fen(fen, allow_zero=allow_zero, maximum=maximum)


def check_fen(fen: int, *, allow_zero: bool = False, maximum: int = ABSURD_FEN) -> int:
    if fen < 0:
        raise InvalidAmount(lazy_gettext("An amount cannot be negative."))
    if fen == 0 and not allow_zero:
        raise InvalidAmount(lazy_gettext("The amount must be more than zero."))
    if fen > maximum:
        raise InvalidAmount(
            lazy_gettext(
                "The amount may not exceed %(limit)s yuan.", limit=format_yuan(maximum)
            ),
            limit_fen=maximum,
        )
    return fen


def format_yuan(fen: int) -> str:
    """``1250`` → ``12.50``; ``-5`` → ``-0.05``."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole}.{part:02d}"
