"""Finance resolves what reconciliation could not: by journal entry, once, audited."""

from __future__ import annotations

import datetime as dt

import pytest

from campus.auth import Role
from campus.errors import InvalidInput
from payments import ledger
from payments.channels.base import PaymentResult, TradeState
from payments.topups import TopUpLimits, open_top_up, settle_top_up
from reconciliation.models import Discrepancy, DiscrepancyStatus
from reconciliation.resolution import AlreadyClosed, Decision, resolve

DAY = dt.date(2026, 12, 2)
NOW = dt.datetime(2026, 12, 2, 4, tzinfo=dt.UTC)


def _settled(session, card, amount=5000):
    from zoneinfo import ZoneInfo

    top_up = open_top_up(
        session,
        card.number,
        amount,
        channel="wechat",
        payer_kind="native",
        limits=TopUpLimits(),
        now=NOW,
        zone=ZoneInfo("Asia/Shanghai"),
    )
    settle_top_up(
        session,
        "wechat",
        PaymentResult(
            out_trade_no=top_up.out_trade_no,
            state=TradeState.SUCCEEDED,
            transaction_id="42" + top_up.out_trade_no[-10:],
            amount_fen=amount,
        ),
        via="notification",
    )
    session.commit()
    return top_up


def _discrepancy(session, kind, **fields):
    item = Discrepancy(
        channel="wechat",
        day=DAY,
        kind=kind,
        key=fields.get("out_trade_no", "k"),
        status=DiscrepancyStatus.OPEN,
        note="",
        **fields,
    )
    session.add(item)
    session.commit()
    return item


def test_trusting_the_channel_on_an_unknown_payment_parks_it_in_suspense(session):
    item = _discrepancy(
        session, "channel_only", out_trade_no="X1", channel_amount_fen=800
    )

    resolved = resolve(
        session,
        item.id,
        Decision.TRUST_CHANNEL,
        reason="refund to payer next week",
        operator="operator:fin",
    )
    session.commit()

    assert resolved.status is DiscrepancyStatus.RESOLVED and resolved.entry_id
    assert ledger.suspense_account(session).balance_fen == 800
    assert ledger.clearing_account(session, "wechat").balance_fen == -800
    assert ledger.check_ledger(session) == []


def test_trusting_the_channel_on_ours_only_reverses_our_top_up(session, make_card):
    card = make_card()
    top_up = _settled(session, card)
    item = _discrepancy(
        session, "ours_only", out_trade_no=top_up.out_trade_no, our_amount_fen=5000
    )

    resolve(
        session,
        item.id,
        Decision.TRUST_CHANNEL,
        reason="never paid",
        operator="operator:fin",
    )
    session.commit()

    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 0
    assert ledger.clearing_account(session, "wechat").balance_fen == 0
    assert ledger.check_ledger(session) == []


def test_money_spent_since_comes_back_through_suspense(session, make_card, merchant):
    from payments.wallet import pay_from_wallet

    card = make_card()
    top_up = _settled(session, card)
    pay_from_wallet(session, card.number, merchant, 4000, idempotency_ref="p:1")
    session.commit()
    item = _discrepancy(
        session, "ours_only", out_trade_no=top_up.out_trade_no, our_amount_fen=5000
    )

    resolve(
        session,
        item.id,
        Decision.TRUST_CHANNEL,
        reason="never paid",
        operator="operator:fin",
    )
    session.commit()

    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 1000  # untouched: nothing taken by force
    assert ledger.suspense_account(session).balance_fen == -5000
    assert ledger.check_ledger(session) == []


def test_trusting_our_records_moves_nothing_and_a_second_resolution_is_refused(
    session,
):
    item = _discrepancy(
        session,
        "amount_mismatch",
        out_trade_no="X2",
        our_amount_fen=500,
        channel_amount_fen=600,
    )

    resolve(
        session,
        item.id,
        Decision.TRUST_OURS,
        reason="bill corrected later",
        operator="operator:fin",
    )
    session.commit()

    assert item.entry_id is None and item.resolution == "trust_ours"
    with pytest.raises(AlreadyClosed):
        resolve(
            session,
            item.id,
            Decision.TRUST_CHANNEL,
            reason="changed my mind",
            operator="operator:fin",
        )


def test_a_resolution_needs_a_reason(session):
    item = _discrepancy(
        session, "channel_only", out_trade_no="X3", channel_amount_fen=100
    )

    with pytest.raises(InvalidInput):
        resolve(
            session,
            item.id,
            Decision.TRUST_CHANNEL,
            reason=" ",
            operator="operator:fin",
        )


def test_finance_resolves_through_the_api_and_others_may_not(
    client, session, sign_in_operator
):
    item = _discrepancy(
        session, "channel_only", out_trade_no="X4", channel_amount_fen=300
    )
    sign_in_operator(Role.AUDITOR)
    listed = client.get("/api/reconciliation/discrepancies")
    refused = client.post(
        f"/api/reconciliation/discrepancies/{item.id}/resolve",
        json={"decision": "trust_channel", "reason": "audit"},
    )
    csv = client.get("/reconciliation/discrepancies.csv")
    page = client.get("/reconciliation")
    sign_in_operator(Role.FINANCE)
    resolved = client.post(
        f"/api/reconciliation/discrepancies/{item.id}/resolve",
        json={"decision": "trust_channel", "reason": "parked"},
    )

    assert [row["label"] for row in listed.json] == ["长款 / channel only"]
    assert refused.status_code == 403
    assert csv.mimetype == "text/csv" and "X4" in csv.get_data(as_text=True)
    assert page.status_code == 200 and "X4" in page.get_data(as_text=True)
    assert resolved.json["status"] == "resolved"
    assert resolved.json["resolved_by"].startswith("operator:")
