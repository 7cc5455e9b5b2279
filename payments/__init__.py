"""Campus card money: ledger, cards, merchants, orders and channels."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from payments import api, cli

    app.register_blueprint(api.bp)
    cli.init_app(app)
