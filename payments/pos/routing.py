"""Which channel a scanned code belongs to, from its digits alone.

==========  =====================================  ==============================
channel     format                                 source
==========  =====================================  ==============================
wechat      18 digits, starting 10–15              WeChat Pay codepay (付款码)
alipay      16–24 digits, starting 25–30           Alipay ``bar_code``
campus      28 digits, starting 7                  our own codes (``channels.campus``)
==========  =====================================  ==============================

The ranges do not overlap: the campus code's length is outside both channels', so
no future WeChat or Alipay code can be taken for ours. A tapped card arrives as a
card number in its own field, never as a code. Anything else is refused with
``UnrecognisedCode`` before any order exists.
"""

from __future__ import annotations

import re

from flask_babel import lazy_gettext

from campus.errors import InvalidInput
from campus.logs import mask_code
from payments.channels.campus.codes import CAMPUS_CODE

WECHAT_CODE = re.compile(r"1[0-5]\d{16}")
ALIPAY_CODE = re.compile(r"(?:2[5-9]|30)\d{14,22}")


class UnrecognisedCode(InvalidInput):
    code = "unrecognised_code"
    title = lazy_gettext("Unrecognised payment code")


def channel_of(code: str) -> str:
    """``wechat``, ``alipay`` or ``campus``; ``UnrecognisedCode`` otherwise."""
    if WECHAT_CODE.fullmatch(code):
        return "wechat"
    if ALIPAY_CODE.fullmatch(code):
        return "alipay"
    if CAMPUS_CODE.fullmatch(code):
        return "campus"
    raise UnrecognisedCode(
        lazy_gettext("This is not a WeChat, Alipay or campus card payment code."),
        code_masked=mask_code(code),
    )
