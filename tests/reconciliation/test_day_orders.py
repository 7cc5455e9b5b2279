"""Each order kind's ``paid_select``, as the nightly run reads it (by column, or
by number once matching goes line by line), gives what its ``paid_between``
gives: the same orders, amounts, transactions and merchants."""

from __future__ import annotations

import datetime as dt

from payments import orders
from payments.topups import TopUp, TopUpState
from reconciliation.matching import DayOrder
from reconciliation.run import _ours
from tests.payments.pos.conftest import make_terminal, terminal  # noqa: F401

START = dt.datetime(2031, 5, 31, 16, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)


def _top_up(session, card, number, state, paid_at, channel="wechat"):  # type: ignore[no-untyped-def]
    session.add(
        TopUp(
            out_trade_no=number,
            card_id=card.id,
            channel=channel,
            payer_kind="desktop",
            amount_fen=100 + len(number),
            state=state,
            transaction_id=f"42{number}" if state is TopUpState.SUCCEEDED else None,
            created_at=START,
            expires_at=START,
            paid_at=paid_at,
            finished_at=paid_at,
        )
    )


def _through_paid_between(session, channel, start, end):  # type: ignore[no-untyped-def]
    return {
        record.out_trade_no: (
            record.kind,
            record.amount_fen,
            record.transaction_id,
            record.merchant,
        )
        for kind in orders.order_kinds()
        for record in kind.paid_between(session, channel, start, end)
    }


def _as_read(paid, day_columns):  # type: ignore[no-untyped-def]
    assert paid == {}
    by_number: dict = {}
    day_columns.into(by_number)
    assert all(isinstance(order, DayOrder) for order in by_number.values())
    return {
        number: (order.kind, order.amount_fen, order.transaction_id, order.merchant)
        for number, order in by_number.items()
    }


def test_the_days_top_ups_are_those_paid_between_gives(session, make_card):
    card = make_card()
    _top_up(session, card, "T-first", TopUpState.SUCCEEDED, START)
    _top_up(session, card, "T-last", TopUpState.SUCCEEDED, END - dt.timedelta(0, 1))
    _top_up(session, card, "T-next-day", TopUpState.SUCCEEDED, END)
    _top_up(
        session, card, "T-day-before", TopUpState.SUCCEEDED, START - dt.timedelta(0, 1)
    )
    _top_up(session, card, "T-paying", TopUpState.PAYING, None)
    _top_up(session, card, "T-alipay", TopUpState.SUCCEEDED, START, channel="alipay")
    session.commit()

    read = _as_read(*_ours(session, "wechat", START, END)[:2])

    assert read == _through_paid_between(session, "wechat", START, END)
    assert set(read) == {"T-first", "T-last"}


def test_the_days_pos_payments_are_those_paid_between_gives(
    app,
    session,
    make_card,
    terminal,  # noqa: F811
):
    card = make_card(balance_fen=10_000)
    _, first = terminal.pay(600, card_number=card.number)
    _, second = terminal.pay(250, card_number=card.number)
    terminal.pay(50_000, card_number=card.number)
    now = app.extensions["payments.pos"].now()
    day = (now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    session.rollback()

    read = _as_read(*_ours(session, "campus", *day)[:2])

    assert read == _through_paid_between(session, "campus", *day)
    assert set(read) == {first["out_trade_no"], second["out_trade_no"]}
