"""Every user-facing message has its Chinese translation, and the compiled
catalogues are the ones the sources say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "campus" / "translations"


def _catalog(locale: str):
    with open(TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po", "rb") as file:
        return read_po(file, locale=locale)


def test_every_message_in_the_code_is_in_the_chinese_catalogue(tmp_path):
    template = tmp_path / "messages.pot"
    subprocess.run(
        [
            str(Path(sys.executable).with_name("pybabel")),
            "-q",
            "extract",
            "-F",
            str(ROOT / "babel.cfg"),
            "-k",
            "lazy_gettext",
            "-k",
            "_l",
            "--no-location",
            "--ignore-dirs",
            ".* _* .venv node_modules tests bench",
            "-o",
            str(template),
            ".",
        ],
        cwd=ROOT,
        check=True,
    )
    with open(template, "rb") as file:
        wanted = {message.id for message in read_po(file) if message.id}
    chinese = {message.id: message.string for message in _catalog("zh") if message.id}

    missing = sorted(wanted - {key for key, value in chinese.items() if value})

    assert missing == [], "run scripts/translations and translate these"


def test_compiled_catalogues_match_their_sources():
    for locale in ("zh", "en"):
        source = {m.id: m.string for m in _catalog(locale) if m.id and m.string}
        with open(TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo", "rb") as file:
            compiled = {m.id: m.string for m in read_mo(file) if m.id}

        assert compiled == source, f"run scripts/translations ({locale} is stale)"
