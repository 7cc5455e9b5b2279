"""What reconciliation reads of POS payments and refunds."""

from __future__ import annotations

import datetime as dt

from campus.auth import Role
from payments import orders


def test_paid_payments_and_refunds_are_listed_for_reconciliation(
    app, client, sign_in_operator, terminal, make_card, merchant, session
):
    card = make_card(balance_fen=1000)
    _, paid = terminal.pay(600, card_number=card.number)
    _, failed = terminal.pay(5000, card_number=card.number)
    sign_in_operator(Role.FINANCE)
    refund = client.post(
        f"/api/pos/payments/{paid['out_trade_no']}/refunds", json={"amount_fen": 200}
    ).json
    now = app.extensions["payments.pos"].now()
    day = (now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    session.rollback()

    kind = orders.order_kind_for(session, paid["out_trade_no"])
    listed = list(kind.paid_between(session, "campus", *day))
    refund_kind = orders.refund_kind_for(session, refund["out_refund_no"])
    refunds = list(refund_kind.refunded_between(session, "campus", *day))

    assert [(r.out_trade_no, r.state, r.amount_fen, r.merchant) for r in listed] == [
        (paid["out_trade_no"], "paid", 600, merchant.code)
    ]
    assert kind.record(session, failed["out_trade_no"]).state == "failed"
    assert [(r.out_refund_no, r.state, r.amount_fen) for r in refunds] == [
        (refund["out_refund_no"], "succeeded", 200)
    ]
