"""Nightly reconciliation against the channels' bills, safe repair, reports and
merchant settlement. Reads ``payments``; ``payments`` knows nothing of it."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from reconciliation import cli, views

    app.register_blueprint(views.bp)
    cli.init_app(app)
