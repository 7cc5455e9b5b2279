"""Campus card money: ledger, cards, merchants, orders and channels."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from payments import api, cli, notifications, orders, top_up_pages, topups

    orders.register(topups.ORDER_KIND)

    settings = app.extensions["campus.settings"]
    if settings.production:
        # Channels are otherwise built at their first use; production must refuse
        # a missing or sandbox merchant configuration when it starts, not at the
        # first student's payment.
        from payments.channels.alipay.config import AlipayConfig
        from payments.channels.wechat.config import WechatConfig

        WechatConfig.from_settings(settings)
        AlipayConfig.from_settings(settings)

    app.register_blueprint(api.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(top_up_pages.bp)
    cli.init_app(app)

    import payments.pos

    payments.pos.init_app(app)
