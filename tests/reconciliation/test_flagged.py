"""Orders payments flagged for review are listed for finance, beside the
discrepancies, without reconciliation changing them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from campus.auth import Role
from payments.channels.base import PaymentResult, TradeState
from payments.orders import SettleOutcome
from payments.pos.models import PaymentSource, PaymentState, PosPayment
from payments.pos.service import settle_payment
from payments.topups import (
    TopUpLimits,
    TopUpState,
    finish_unpaid,
    open_top_up,
    settle_top_up,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOON = dt.datetime(2031, 3, 4, 4, 0, tzinfo=dt.UTC)


def _paid(out_trade_no: str, amount_fen: int) -> PaymentResult:
    return PaymentResult(
        out_trade_no=out_trade_no,
        state=TradeState.SUCCEEDED,
        transaction_id="4200000099",
        amount_fen=amount_fen,
    )


def _top_up(session, card, amount_fen: int):
    top_up = open_top_up(
        session,
        card.number,
        amount_fen,
        channel="wechat",
        payer_kind="native",
        limits=TopUpLimits(),
        zone=SHANGHAI,
        now=NOON,
    )
    session.commit()
    return top_up


def test_orders_paid_after_they_closed_are_listed_for_review(
    client, session, make_card, merchant, sign_in_operator
):
    card = make_card()
    closed = _top_up(session, card, 3000)
    finish_unpaid(session, closed.out_trade_no, TopUpState.CLOSED, "expired")
    _top_up(session, card, 2000)  # still waiting: not flagged
    failed = PosPayment(
        out_trade_no="P20310304failed01",
        merchant_id=merchant.id,
        source=PaymentSource.CODE,
        channel="alipay",
        amount_fen=1500,
        state=PaymentState.FAILED,
        description="lunch",
    )
    session.add(failed)
    session.commit()
    outcomes = [
        settle_top_up(session, "wechat", _paid(closed.out_trade_no, 3000), via="n"),
        settle_payment(session, "alipay", _paid(failed.out_trade_no, 1500), via="n"),
    ]
    session.commit()
    sign_in_operator(Role.AUDITOR)

    listed = client.get("/api/reconciliation/flagged-orders")
    page = client.get("/reconciliation").get_data(as_text=True)

    assert outcomes == [SettleOutcome.FLAGGED, SettleOutcome.FLAGGED]
    assert listed.status_code == 200
    by_number = {order["out_trade_no"]: order for order in listed.json}
    assert set(by_number) == {closed.out_trade_no, failed.out_trade_no}
    top_up = by_number[closed.out_trade_no]
    assert (top_up["kind"], top_up["state"], top_up["amount_fen"]) == (
        "top_up",
        "closed",
        3000,
    )
    assert "closed" in top_up["reason"]
    payment = by_number[failed.out_trade_no]
    assert (payment["kind"], payment["merchant"], payment["channel"]) == (
        "pos_payment",
        merchant.code,
        "alipay",
    )
    assert "failed" in payment["reason"]
    assert "Orders flagged for review (2)" in page
    assert closed.out_trade_no in page and failed.out_trade_no in page
    session.rollback()
    assert session.get(PosPayment, failed.id).state is PaymentState.FAILED


def test_flagged_orders_are_for_finance_and_auditors_only(client, sign_in_operator):
    sign_in_operator(Role.REGISTRAR)

    refused = client.get("/api/reconciliation/flagged-orders")

    assert refused.status_code == 403
