"""Canteen POS payments: signed terminal API, payment-code routing, the campus
channel, the aggregated QR checkout, refunds, and the pages and CLI around them.

Modules:

``models``         payments, refunds, remembered nonces, cashier assignments
``config``         the POS settings (``CAMPUS_POS_*``), with a clock and sleep tests
                   can replace
``terminal_auth``  the request signature every terminal call carries
``routing``        which channel a scanned code belongs to
``service``        pay, poll, reverse, query, settle, and the stale-payment job
``refunds``        the refund state machine
``records``        the order kinds registered with ``payments.orders``, with what
                   reconciliation reads
``api``            the JSON endpoints (terminal and operator)
``pages``          the student's code page, the checkout page, the web POS, the
                   operator's day list
``cli``            ``flask pos …``
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from campus.scheduler import Job, register_job
    from payments import orders
    from payments.pos import api, cli, config, pages, records, refunds, service

    config.init_app(app)
    orders.register(records.ORDER_KIND)
    orders.register(records.REFUND_KIND)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.operator_bp)
    app.config["SECURITY_SCHEMES"] = {
        **app.config.get("SECURITY_SCHEMES", {}),
        api.SIGNED: api.SECURITY_SCHEME,
    }
    app.register_blueprint(pages.bp)
    cli.init_app(app)
    register_job(app, Job("pos_resolve_stale", service.resolve_stale, every_seconds=30))
    register_job(
        app,
        Job(
            "pos_resolve_stale_refunds", refunds.resolve_stale_refunds, every_seconds=60
        ),
    )
