"""Campus card money: ledger, cards, merchants, orders and channels."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from payments import api, cli, notifications, orders, top_up_pages, topups

    orders.register(topups.ORDER_KIND)

    app.register_blueprint(api.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(top_up_pages.bp)
    cli.init_app(app)

    import payments.pos

    payments.pos.init_app(app)
