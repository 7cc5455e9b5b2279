"""Verification codes: printed on every page, typed by employers.

A code is 19 random symbols of Crockford's base-32 alphabet (95 bits, from
``secrets``) and one check symbol, written in five groups of four::

    7K3Q-M9TX-B2WD-4HNR-PZ6E
                           ^ check symbol

The alphabet leaves out I, L, O and U so that nothing reads as another thing;
typed input is forgiving (lower case, spaces, missing dashes, O for 0 and I or L
for 1). The check symbol is Luhn mod N over the alphabet (N = 32), which catches
every single mistyped symbol and all but one pair of swapped neighbours (``0Z``
and ``Z0``), so a typo is caught before any look-up.

Errors::

    campus.errors.InvalidInput
    └── MalformedCode     not a code: wrong length, foreign symbol, or the check
                          symbol does not match (``reason`` says which)
"""

from __future__ import annotations

import secrets

from flask_babel import lazy_gettext

from campus.errors import InvalidInput

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
N = len(ALPHABET)
RANDOM_SYMBOLS = 19
LENGTH = RANDOM_SYMBOLS + 1
GROUP = 4
BITS = RANDOM_SYMBOLS * 5

_VALUE = {symbol: index for index, symbol in enumerate(ALPHABET)}
# Crockford's decoding of look-alikes.
_VALUE.update({"O": 0, "I": 1, "L": 1})


class MalformedCode(InvalidInput):
    code = "malformed_code"
    title = lazy_gettext("Not a valid verification code")

    def __init__(self, reason: str) -> None:
        messages = {
            "length": lazy_gettext("A verification code has 20 characters."),
            "symbol": lazy_gettext("The code contains a character codes never use."),
            "check": lazy_gettext(
                "The code has a typing mistake: please compare it with the document."
            ),
        }
        super().__init__(messages[reason], reason=reason)
        self.reason = reason


def check_symbol(symbols: str) -> str:
    """Luhn mod N check symbol of ``symbols`` (already normalised)."""
    factor = 2
    total = 0
    for symbol in reversed(symbols):
        addend = factor * _VALUE[symbol]
        factor = 1 if factor == 2 else 2
        total += addend // N + addend % N
    return ALPHABET[(N - total % N) % N]


def new_code() -> str:
    """A fresh code, grouped for reading."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_SYMBOLS))
    return group(body + check_symbol(body))


def group(compact: str) -> str:
    return "-".join(compact[i : i + GROUP] for i in range(0, len(compact), GROUP))


def normalise(typed: str) -> str:
    """The grouped canonical form of ``typed``, or ``MalformedCode``."""
    compact = "".join(ch for ch in typed.upper() if ch not in " -\t\u00a0\u2010\u2011")
    if len(compact) != LENGTH:
        raise MalformedCode("length")
    if any(ch not in _VALUE for ch in compact):
        raise MalformedCode("symbol")
    canonical = "".join(ALPHABET[_VALUE[ch]] for ch in compact)
    if check_symbol(canonical[:-1]) != canonical[-1]:
        raise MalformedCode("check")
    return group(canonical)


def is_valid(typed: str) -> bool:
    try:
        normalise(typed)
    except MalformedCode:
        return False
    return True
