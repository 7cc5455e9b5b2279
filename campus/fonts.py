"""The CJK font for PDFs made outside ``transcripts``, such as finance's reports.

The project ships one TrueType font, WenQuanYi Micro Hei, as package data of
``transcripts``. Packages that may not import ``transcripts`` find its folder through
the import system's finder, which locates a package without running it, and register
the same file under a name of their own.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

CJK_FONT = "CampusCJK"
"""The name reportlab knows the font by once ``register_cjk_font`` has run.
Distinct from the name ``transcripts`` registers, so neither replaces the other's
font object while a document is being built."""


class FontMissing(RuntimeError):
    """The shipped font file is not where the ``transcripts`` package keeps it."""


def cjk_font_path() -> Path:
    spec = importlib.util.find_spec("transcripts")
    if spec is None or not spec.submodule_search_locations:
        raise FontMissing("the transcripts package, which ships the font, is absent")
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts"
    path = path / "wqy-microhei.ttf"
    if not path.is_file():
        raise FontMissing(f"no font file at {path}")
    return path


@functools.cache
def register_cjk_font() -> str:
    """Register the font once per process (parsing its 4.6 MB takes ~0.2 s) and
    return its name. reportlab embeds the subset a document uses."""
    pdfmetrics.registerFont(TTFont(CJK_FONT, str(cjk_font_path())))
    return CJK_FONT
