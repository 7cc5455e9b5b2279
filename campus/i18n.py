"""Chinese first, English second: locale choice and the message catalogue.

The locale comes from, in order: a ``lang`` query parameter (remembered in a cookie),
the ``lang`` cookie, the ``Accept-Language`` header, and finally Chinese.
Catalogues live in ``campus/translations``; the source strings are English.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response, g, has_request_context, request
from flask_babel import Babel, get_locale, refresh

LOCALES = ("zh", "en")
DEFAULT_LOCALE = "zh"
TRANSLATIONS = Path(__file__).resolve().parent / "translations"

babel = Babel()


def select_locale() -> str:
    if not has_request_context():
        # The CLI speaks the terminal's language when it is English.
        return "en" if os.environ.get("LANG", "").startswith("en") else DEFAULT_LOCALE
    asked = request.args.get("lang") or request.cookies.get("lang")
    if asked in LOCALES:
        return asked
    return request.accept_languages.best_match(LOCALES) or DEFAULT_LOCALE


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "Asia/Shanghai")
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.globals["get_locale"] = get_locale

    @app.before_request
    def _remember_lang() -> None:
        # Flask-Babel caches the locale on the app context, which a request may
        # share with an enclosing one (the CLI, tests); choose afresh per request.
        refresh()
        g.lang_choice = request.args.get("lang")

    @app.after_request
    def _lang_cookie(response: Response) -> Response:
        choice = g.get("lang_choice")
        if choice in LOCALES:
            response.set_cookie("lang", choice, max_age=365 * 86400, samesite="Lax")
        return response
