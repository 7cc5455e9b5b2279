"""Orders payments flagged for review are listed for finance, beside the
discrepancies, without reconciliation changing them."""

from __future__ import annotations

import datetime as dt
import threading
import time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text

from campus.auth import Role
from campus.database import db
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
from reconciliation.flagged import AlreadyReviewed, review
from reconciliation.models import OrderReview

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
    assert "待复核订单（2）" in page
    assert closed.out_trade_no in page and failed.out_trade_no in page
    english = client.get("/reconciliation?lang=en").get_data(as_text=True)
    assert "Orders flagged for review (2)" in english
    session.rollback()
    assert session.get(PosPayment, failed.id).state is PaymentState.FAILED


def test_flagged_orders_are_for_finance_and_auditors_only(client, sign_in_operator):
    sign_in_operator(Role.REGISTRAR)

    refused = client.get("/api/reconciliation/flagged-orders")

    assert refused.status_code == 403


def _flag_closed_top_up(session, make_card):  # type: ignore[no-untyped-def]
    closed = _top_up(session, make_card(), 3000)
    finish_unpaid(session, closed.out_trade_no, TopUpState.CLOSED, "expired")
    settle_top_up(session, "wechat", _paid(closed.out_trade_no, 3000), via="n")
    session.commit()
    return closed.out_trade_no


def test_a_reviewed_order_leaves_the_list_and_is_kept_with_who_and_why(
    client, session, make_card, sign_in_operator
):
    number = _flag_closed_top_up(session, make_card)
    sign_in_operator(Role.FINANCE)

    reviewed = client.post(
        f"/api/reconciliation/flagged-orders/top_up/{number}/review",
        json={"note": "refunded to the student by hand"},
    )
    listed = client.get("/api/reconciliation/flagged-orders").json
    reviews = client.get("/api/reconciliation/order-reviews").json
    page = client.get("/reconciliation").get_data(as_text=True)

    assert reviewed.status_code == 200
    assert reviewed.json["reviewed_by"].startswith("operator:")
    assert "closed" in reviewed.json["flag_reason"]
    assert listed == []
    assert [(r["out_trade_no"], r["note"]) for r in reviews] == [
        (number, "refunded to the student by hand")
    ]
    assert "待复核订单（0）" in page
    assert "refunded to the student by hand" in page
    session.rollback()
    # The flag itself belongs to payments and stays.
    from payments.topups import find_top_up

    assert find_top_up(session, number).needs_review is True


def test_a_review_is_refused_without_a_note_twice_or_for_an_order_not_flagged(
    client, session, make_card, sign_in_operator
):
    number = _flag_closed_top_up(session, make_card)
    sign_in_operator(Role.FINANCE)
    url = f"/api/reconciliation/flagged-orders/top_up/{number}/review"

    blank = client.post(url, json={"note": "  "})
    first = client.post(url, json={"note": "checked with WeChat Pay"})
    again = client.post(url, json={"note": "checked again"})
    unknown = client.post(
        "/api/reconciliation/flagged-orders/top_up/T-none/review",
        json={"note": "nothing"},
    )
    wrong_kind = client.post(
        f"/api/reconciliation/flagged-orders/refund/{number}/review",
        json={"note": "nothing"},
    )

    assert blank.status_code == 400
    assert first.status_code == 200
    assert (again.status_code, again.json["code"]) == (409, "order_already_reviewed")
    assert (unknown.status_code, unknown.json["code"]) == (404, "order_not_flagged")
    assert wrong_kind.status_code == 404
    assert len(client.get("/api/reconciliation/order-reviews").json) == 1


def test_an_order_flagged_again_for_another_reason_is_listed_again(
    client, session, make_card, sign_in_operator
):
    from payments.topups import find_top_up

    number = _flag_closed_top_up(session, make_card)
    sign_in_operator(Role.FINANCE)
    client.post(
        f"/api/reconciliation/flagged-orders/top_up/{number}/review",
        json={"note": "checked with WeChat Pay"},
    )
    top_up = find_top_up(session, number)
    top_up.review_reason = "a second transaction for the same order"
    session.commit()

    listed = client.get("/api/reconciliation/flagged-orders").json

    assert [order["out_trade_no"] for order in listed] == [number]


def test_auditors_read_reviews_but_only_finance_reviews(
    client, session, make_card, sign_in_operator
):
    number = _flag_closed_top_up(session, make_card)
    sign_in_operator(Role.AUDITOR)

    refused = client.post(
        f"/api/reconciliation/flagged-orders/top_up/{number}/review",
        json={"note": "looks fine to me"},
    )
    page = client.get("/reconciliation").get_data(as_text=True)

    assert refused.status_code == 403
    assert client.get("/api/reconciliation/order-reviews").status_code == 200
    assert "标记已复核" not in page
    assert len(client.get("/api/reconciliation/flagged-orders").json) == 1


def test_the_finance_page_marks_a_flagged_order_reviewed(
    client, session, make_card, sign_in_operator
):
    number = _flag_closed_top_up(session, make_card)
    sign_in_operator(Role.FINANCE)

    before = client.get("/reconciliation").get_data(as_text=True)
    posted = client.post(
        "/reconciliation",
        data={
            "action": "review",
            "kind": "top_up",
            "out_trade_no": number,
            "note": "paid back at the counter",
        },
    )

    assert "标记已复核" in before
    assert posted.status_code == 302
    assert client.get("/api/reconciliation/flagged-orders").json == []


def test_an_auditor_cannot_review_or_resolve_through_the_finance_page(
    client, session, make_card, sign_in_operator
):
    number = _flag_closed_top_up(session, make_card)
    sign_in_operator(Role.AUDITOR)

    posted = client.post(
        "/reconciliation",
        data={
            "action": "review",
            "kind": "top_up",
            "out_trade_no": number,
            "note": "looks fine to me",
        },
    )
    resolving = client.post(
        "/reconciliation",
        data={"id": "1", "decision": "trust_ours", "reason": "looks fine"},
    )

    assert (posted.status_code, resolving.status_code) == (403, 403)
    assert [
        o["out_trade_no"] for o in client.get("/api/reconciliation/flagged-orders").json
    ] == [number]


def _wait_for_a_lock_wait(session, seconds: float = 10) -> None:
    """Until another connection of this database waits on a lock."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
        )
        session.rollback()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the second review never waited for the first")


@pytest.mark.postgres
def test_two_operators_reviewing_one_flag_at_once_record_one_review(session, make_card):
    number = _flag_closed_top_up(session, make_card)
    first, second = db.new_session(), db.new_session()
    outcome: list[str] = []

    def the_other_operator() -> None:
        try:
            # Reads no review yet (the first is not committed), then waits on
            # the unique index for the first transaction to end.
            review(second, "top_up", number, note="checked it too", operator="b")
            second.commit()
            outcome.append("reviewed")
        except AlreadyReviewed as refusal:
            second.rollback()
            outcome.append(refusal.code)

    try:
        review(first, "top_up", number, note="checked with WeChat Pay", operator="a")
        racing = threading.Thread(target=the_other_operator)
        racing.start()
        _wait_for_a_lock_wait(session)
        first.commit()
        racing.join(10)
    finally:
        first.close()
        second.close()

    assert outcome == ["order_already_reviewed"]
    assert session.scalar(select(func.count()).select_from(OrderReview)) == 1
    assert session.scalar(select(OrderReview.reviewed_by)) == "a"
