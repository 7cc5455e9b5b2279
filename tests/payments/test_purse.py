"""A settled top-up on a chip card waits as a pending load, claimed once."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from payments import ledger
from payments.channels.base import PaymentResult, TradeState
from payments.purse import (
    LoadExceeded,
    LoadState,
    confirm_load,
    pending_loads,
    purse_account,
)
from payments.topups import TopUpLimits, open_top_up, settle_top_up

NOW = dt.datetime(2026, 12, 3, 4, 0, tzinfo=dt.UTC)


def _settled_top_up(session, card, amount_fen=3000):
    top_up = open_top_up(
        session,
        card.number,
        amount_fen,
        channel="alipay",
        payer_kind="wap",
        limits=TopUpLimits(),
        now=NOW,
        zone=ZoneInfo("Asia/Shanghai"),
    )
    settle_top_up(
        session,
        "alipay",
        PaymentResult(
            out_trade_no=top_up.out_trade_no,
            state=TradeState.SUCCEEDED,
            transaction_id="2026120322001",
            amount_fen=amount_fen,
        ),
        via="notification",
    )
    session.commit()
    return top_up


def test_a_chip_card_top_up_becomes_a_pending_load(session, make_card):
    card = make_card(offline_purse=True)

    _settled_top_up(session, card)

    loads = pending_loads(session, card.number)
    assert [(load.amount_fen, load.state) for load in loads] == [
        (3000, LoadState.PENDING)
    ]


def test_a_card_without_a_chip_purse_gets_no_load(session, make_card):
    card = make_card()

    _settled_top_up(session, card)

    assert pending_loads(session, card.number) == []


def test_loads_are_confirmed_in_parts_and_once(session, make_card):
    card = make_card(offline_purse=True)
    _settled_top_up(session, card)
    load = pending_loads(session, card.number)[0]

    confirm_load(
        session, card.number, load.id, 1000, confirmation_id="c1", terminal="T1"
    )
    session.commit()
    again = confirm_load(
        session, card.number, load.id, 1000, confirmation_id="c1", terminal="T1"
    )
    loaded_after_replay = again.loaded_fen
    session.commit()
    confirm_load(
        session, card.number, load.id, 2000, confirmation_id="c2", terminal="T1"
    )
    session.commit()

    assert loaded_after_replay == 1000
    session.refresh(load)
    assert load.state is LoadState.LOADED and load.loaded_fen == 3000
    assert pending_loads(session, card.number) == []
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 0
    assert purse_account(session, card).balance_fen == 3000
    assert ledger.check_ledger(session) == []


def test_a_confirmation_cannot_claim_more_than_is_pending(session, make_card):
    card = make_card(offline_purse=True)
    _settled_top_up(session, card)
    load = pending_loads(session, card.number)[0]
    confirm_load(
        session, card.number, load.id, 2500, confirmation_id="c1", terminal="T1"
    )
    session.commit()

    with pytest.raises(LoadExceeded) as refused:
        confirm_load(
            session, card.number, load.id, 501, confirmation_id="c2", terminal="T1"
        )

    assert refused.value.fields["remaining_fen"] == 500
    session.rollback()
    session.refresh(card.wallet)
    assert card.wallet.balance_fen == 500
