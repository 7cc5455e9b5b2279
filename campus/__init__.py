"""The application shell: settings, database, people, sign-in, errors and CLI.

``create_app`` loads settings, then lets each package bind itself to the app through
its ``init_app``; nothing here knows how payments or transcripts work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from apiflask import APIFlask
from flask import render_template

from campus.settings import Settings, SettingsError

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, **overrides: Any) -> APIFlask:
    """Build the app from ``settings`` (default: read from the environment), with
    ``overrides`` applied on top, as tests do."""
    from campus import auth, cli, errors, health, i18n, logs
    from campus.database import db

    if settings is None:
        settings = Settings.from_environ(**overrides)
    elif overrides:
        settings = Settings(**{**settings.__dict__, **overrides})
        settings.check()

    json_lines = settings.log_format == "json" or (
        not settings.log_format and settings.production
    )
    logs.configure(settings.log_level, json_lines=json_lines)

    settings.instance_path.mkdir(parents=True, exist_ok=True)
    app = APIFlask(
        __name__,
        title="Campus Card 校园卡",
        version="0.1.0",
        instance_path=str(settings.instance_path.resolve()),
        docs_path="/docs",
        spec_path="/openapi.json",
    )
    app.extensions["campus.settings"] = settings
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client address and scheme only: the proxy passes Host on itself
        # (``proxy_set_header Host``), and an X-Forwarded-Host it does not set
        # would let the client choose the host of every external URL we build.
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=0
        )
    app.config.update(
        SECRET_KEY=settings.resolved_secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.production,
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
        VALIDATION_ERROR_STATUS_CODE=400,
        BABEL_DEFAULT_TIMEZONE=settings.timezone,
        JSON_SORT_KEYS=False,
        SECURITY_SCHEMES={
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
        },
        SERVERS=[{"url": settings.base_url}],
        INFO={
            "description": "校园卡充值、食堂收款、对账与电子成绩单。"
            " Campus card top-up, canteen payments, reconciliation and signed"
            " transcripts. Errors are RFC 9457 problem details with a stable `code`.",
        },
    )

    errors.init_app(app)
    i18n.init_app(app)
    db.init_app(app)
    health.init_app(app)
    auth.init_app(app)
    cli.init_app(app)

    import payments
    import reconciliation
    import signing
    import transcripts

    if settings.channels == "sandbox":
        # The built-in WeChat Pay and Alipay gateways, served beside the app at
        # /sandbox; production mode refuses this setting.
        _mount_sandbox(app, settings)
    payments.init_app(app)
    reconciliation.init_app(app)
    signing.init_app(app)
    transcripts.init_app(app)

    @app.get("/")
    @app.doc(hide=True)
    def index() -> str:
        return render_template("index.html")

    logger.info(
        "app_created",
        extra={"mode": settings.mode, "database": app_database_label(settings)},
    )
    return app


# One sandbox per instance folder and process: it is a foreign system whose state
# (clock, faults, queued notifications) outlives any one app object.
_sandboxes: dict[Path, Any] = {}


def _mount_sandbox(app: APIFlask, settings: Settings) -> None:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from sandbox import create_sandbox

    folder = settings.instance_path.resolve()
    if folder not in _sandboxes:
        _sandboxes[folder] = create_sandbox(folder)
    sandbox = _sandboxes[folder]
    if settings.sandbox_faults:
        try:
            sandbox.faults.apply(
                settings.sandbox_faults,
                {n: getattr(g, "fault_names", {}) for n, g in sandbox.gateways.items()},
            )
        except ValueError as error:
            raise SettingsError(f"CAMPUS_SANDBOX_FAULTS: {error}") from error
    app.extensions["campus.sandbox"] = sandbox
    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {"/sandbox": sandbox.wsgi()}
    )


def app_database_label(settings: Settings) -> str:
    """The database's dialect and host or file, without a password."""
    from sqlalchemy.engine import make_url

    return make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
