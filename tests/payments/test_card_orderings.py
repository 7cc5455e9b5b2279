"""Orderings of a card's life against its money that the other tests do not reach.

A card reported lost, or closed, while one of its top-ups is paying at the channel
and the payment is then notified (and the nightly stale job runs after it); a card
closed while a top-up settles on it at the same moment; closing a chip card with a
load still pending, or with money on its chip; a load confirmed by two terminals at
once, confirmed again after its answer was lost, confirmed after the card was
frozen, and offered to a terminal for a card reported lost; a PIN changed while a
terminal pays with the old one; wrong PINs at ten terminals at once; and top-ups
from three phones at once that together pass the daily cap.

Races run on PostgreSQL, released by a barrier or held in a deliberate order. Every
test ends with what the money did: balances, journal entries, and a ledger that
proves (``ledger.check_ledger``).
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from sqlalchemy import select

from campus.database import db
from campus.errors import InsufficientFunds
from payments import ledger
from payments.cards import CardStatus, InvalidTransition, change_status, find_card
from payments.channels.base import PaymentResult, TradeState
from payments.channels.campus import codes, pin
from payments.merchants import add_terminal
from payments.pos.models import CardPin
from payments.purse import (
    LoadExceeded,
    LoadState,
    PurseLoad,
    confirm_load,
    pending_loads,
    purse_account,
)
from payments.remote_top_up import resolve_stale_top_ups
from payments.topups import (
    SettleOutcome,
    TopUp,
    TopUpLimits,
    TopUpState,
    find_top_up,
    open_top_up,
    settle_top_up,
)
from payments.wallet import pay_from_wallet
from tests.live import in_app, together
from tests.payments.pos.conftest import SignedTerminal
from tests.payments.test_notifications import (
    DESKTOP,
    open_top_up_over_http,
    payer_pays,
)

NOW = dt.datetime(2026, 12, 3, 4, 0, tzinfo=dt.UTC)
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


# -- helpers ---------------------------------------------------------------------


def _entries(session, order_ref: str) -> list[tuple[str, str]]:
    session.rollback()
    return [
        (kind.value, reference)
        for kind, reference in session.execute(
            select(ledger.JournalEntry.kind, ledger.JournalEntry.idempotency_ref)
            .where(ledger.JournalEntry.order_ref == order_ref)
            .order_by(ledger.JournalEntry.id)
        )
    ]


def _balance(session, number: str) -> int:
    session.rollback()
    return find_card(session, number).balance_fen


def _status(session, number: str) -> CardStatus:
    session.rollback()
    return find_card(session, number).status


def _on_chip(session, number: str) -> int:
    session.rollback()
    return purse_account(session, find_card(session, number)).balance_fen


def _settled_chip_top_up(session, card, amount_fen=3000) -> PurseLoad:
    """A settled top-up of ``amount_fen`` on a chip card: its pending load."""
    top_up = open_top_up(
        session,
        card.number,
        amount_fen,
        channel="alipay",
        payer_kind="wap",
        limits=TopUpLimits(),
        zone=SHANGHAI,
        now=NOW,
    )
    outcome = settle_top_up(session, "alipay", _paid(top_up), via="notification")
    assert outcome is SettleOutcome.CREDITED
    session.commit()
    return session.scalars(
        select(PurseLoad).where(PurseLoad.top_up_id == top_up.id)
    ).one()


def _paid(top_up: TopUp, transaction_id: str = "2026120322001") -> PaymentResult:
    return PaymentResult(
        out_trade_no=top_up.out_trade_no,
        state=TradeState.SUCCEEDED,
        transaction_id=transaction_id,
        amount_fen=top_up.amount_fen,
    )


def _signed_terminal(session, merchant, app, url=None) -> SignedTerminal:
    terminal = add_terminal(session, merchant, "till")
    session.commit()
    return SignedTerminal(terminal.key_id, terminal.secret, app, url)


def _confirm_over_api(terminal, number, load_id, amount_fen, confirmation_id):
    return terminal.send(
        "POST",
        f"/api/terminal/cards/{number}/pending-loads/{load_id}/confirm",
        {"amount_fen": amount_fen, "confirmation_id": confirmation_id},
    )


# -- a top-up paying while its card changes -----------------------------------------


def test_a_top_up_paid_while_its_card_was_reported_lost_is_credited_and_kept(
    live_app, student_browser, session, merchant
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = card.number
    created = open_top_up_over_http(live_app, browser, card)
    order = created["out_trade_no"]
    session.rollback()
    change_status(session, number, CardStatus.LOST, reason="lost", actor="t")
    session.commit()

    payer_pays(live_app, browser, created["qr_content"])
    delivered = live_app.sandbox.outbox.deliver_due()

    # The money moved at the channel and is the holder's: on the wallet, where it
    # waits for the replacement card, and cannot be spent while the card is lost.
    assert delivered == 1
    session.rollback()
    assert find_top_up(session, order).state is TopUpState.SUCCEEDED
    assert not find_top_up(session, order).needs_review
    assert _balance(session, number) == 1000 + 5000
    assert _entries(session, order) == [("top_up", f"top_up:{order}")]
    terminal = _signed_terminal(session, merchant, live_app.app)
    _, answer = terminal.pay(300, card_number=number)
    assert (answer["state"], answer["failure_code"]) == ("failed", "card_not_active")
    assert _balance(session, number) == 6000
    assert ledger.check_ledger(session) == []


def test_a_top_up_paid_after_its_card_was_closed_is_flagged_and_never_credited(
    live_app, student_browser, session, merchant
):
    browser = student_browser(DESKTOP)
    card = student_browser.card
    number = card.number
    created = open_top_up_over_http(live_app, browser, card)
    order = created["out_trade_no"]
    # The holder spends the balance and the card is closed while the order waits.
    session.rollback()
    pay_from_wallet(session, number, merchant, 1000, idempotency_ref="drain")
    change_status(session, number, CardStatus.CLOSED, reason="left", actor="t")
    session.commit()

    payer_pays(live_app, browser, created["qr_content"])
    live_app.sandbox.outbox.deliver_due()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    in_app(live_app, lambda: resolve_stale_top_ups(now=later))
    in_app(
        live_app,
        lambda: resolve_stale_top_ups(now=later + dt.timedelta(hours=12)),
    )

    session.rollback()
    top_up = find_top_up(session, order)
    assert top_up.state is not TopUpState.SUCCEEDED
    assert top_up.needs_review and "closed" in top_up.review_reason
    assert _status(session, number) is CardStatus.CLOSED
    assert _balance(session, number) == 0
    assert _entries(session, order) == []
    assert ledger.clearing_account(session, "wechat").balance_fen == 0
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
def test_a_card_closed_while_its_top_up_settles_never_keeps_money(session, make_card):
    card = make_card()
    number = card.number
    top_up = open_top_up(
        session,
        card.number,
        5000,
        channel="wechat",
        payer_kind="native",
        limits=TopUpLimits(),
        zone=SHANGHAI,
        now=NOW,
    )
    session.commit()
    number, result = card.number, _paid(top_up)
    closer = db.new_session()
    settled: list = []

    def settle():
        own = db.new_session()
        try:
            settled.append(settle_top_up(own, "wechat", result, via="notification"))
            own.commit()
        finally:
            own.close()

    try:
        # The close has checked the zero balance and holds the card's row ...
        change_status(closer, number, CardStatus.CLOSED, reason="left", actor="t")
        with ThreadPoolExecutor(1) as pool:
            # ... when the notification arrives; the close commits after it
            # (or after a second, if the settle rightly waits for the card).
            running = pool.submit(settle)
            try:
                running.result(timeout=1)
            except FutureTimeout:
                pass
            closer.commit()
            running.result(timeout=30)
    finally:
        closer.close()

    session.rollback()
    closed = find_card(session, number)
    if closed.status is CardStatus.CLOSED:
        assert closed.balance_fen == 0
        assert settled == [SettleOutcome.FLAGGED]
        assert find_top_up(session, top_up.out_trade_no).needs_review
    else:
        assert closed.balance_fen == 5000
    assert ledger.check_ledger(session) == []


# -- chip purses: closing, confirming twice, after a freeze, a lost card -----------


def test_a_chip_card_with_a_load_still_pending_cannot_be_closed(session, make_card):
    card = make_card(offline_purse=True)
    number = card.number
    load = _settled_chip_top_up(session, card)

    with pytest.raises(InvalidTransition):
        change_status(session, card.number, CardStatus.CLOSED, reason="x", actor="t")
    session.rollback()

    assert _status(session, number) is CardStatus.ACTIVE
    assert [pending.id for pending in pending_loads(session, card.number)] == [load.id]
    assert _balance(session, number) == 3000
    assert ledger.check_ledger(session) == []


def test_a_chip_card_with_money_on_its_chip_cannot_be_closed(session, make_card):
    card = make_card(offline_purse=True)
    number = card.number
    load = _settled_chip_top_up(session, card)
    confirm_load(
        session, card.number, load.id, 3000, confirmation_id="c1", terminal="T1"
    )
    session.commit()
    assert _balance(session, number) == 0

    with pytest.raises(InvalidTransition):
        change_status(session, card.number, CardStatus.CLOSED, reason="x", actor="t")
    session.rollback()

    assert _status(session, number) is CardStatus.ACTIVE
    assert _on_chip(session, number) == 3000
    assert ledger.check_ledger(session) == []


def test_a_load_confirmation_whose_answer_was_lost_moves_the_money_once(
    app, session, make_card, merchant
):
    card = make_card(offline_purse=True)
    number = card.number
    load = _settled_chip_top_up(session, card)
    terminal = _signed_terminal(session, merchant, app)

    first = _confirm_over_api(terminal, card.number, load.id, 3000, "chip-77")
    retried = _confirm_over_api(terminal, card.number, load.id, 3000, "chip-77")

    assert first == retried
    assert retried[0] == 200
    assert retried[1]["loaded_fen"] == 3000 and retried[1]["state"] == "loaded"
    assert _balance(session, number) == 0
    assert _on_chip(session, number) == 3000
    assert _entries(session, f"load:{load.id}") == [
        ("purse_load", f"purse_load:{card.number}:chip-77")
    ]
    assert ledger.check_ledger(session) == []


def test_a_load_written_before_a_freeze_and_confirmed_after_is_recorded(
    session, make_card
):
    card = make_card(offline_purse=True)
    number = card.number
    load = _settled_chip_top_up(session, card)
    # The terminal fetched the load and wrote the chip; the card is frozen before
    # its confirmation arrives. The chip holds the money: the books must say so.
    change_status(session, card.number, CardStatus.FROZEN, reason="x", actor="t")
    session.commit()

    confirm_load(
        session, card.number, load.id, 3000, confirmation_id="c1", terminal="T1"
    )
    session.commit()

    session.refresh(load)
    assert load.state is LoadState.LOADED
    assert _balance(session, number) == 0
    assert _on_chip(session, number) == 3000
    assert _entries(session, f"load:{load.id}") == [
        ("purse_load", f"purse_load:{card.number}:c1")
    ]
    assert ledger.check_ledger(session) == []


def test_a_lost_cards_pending_loads_are_not_offered_to_a_terminal(
    app, session, make_card, merchant
):
    card = make_card(offline_purse=True)
    number = card.number
    _settled_chip_top_up(session, card)
    change_status(session, card.number, CardStatus.LOST, reason="lost", actor="t")
    session.commit()
    terminal = _signed_terminal(session, merchant, app)

    status, answer = terminal.send(
        "GET", f"/api/terminal/cards/{card.number}/pending-loads"
    )

    assert status != 200 or answer["loads"] == []
    assert _balance(session, number) == 3000
    assert _on_chip(session, number) == 0
    assert ledger.check_ledger(session) == []


def test_a_load_fetched_and_the_wallet_spent_before_its_confirmation_moves_nothing(
    session, make_card, merchant
):
    card = make_card(offline_purse=True)
    number = card.number
    load = _settled_chip_top_up(session, card)
    pay_from_wallet(session, card.number, merchant, 2000, idempotency_ref="meal")
    session.commit()

    with pytest.raises(InsufficientFunds):
        confirm_load(
            session, card.number, load.id, 3000, confirmation_id="c1", terminal="T1"
        )
    session.rollback()

    assert _balance(session, number) == 1000
    assert _on_chip(session, number) == 0
    assert _entries(session, f"load:{load.id}") == []
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
@pytest.mark.parametrize("same_confirmation", [True, False])
def test_one_load_confirmed_by_two_terminals_at_once_moves_it_once(
    session, make_card, same_confirmation
):
    card = make_card(offline_purse=True)
    number = card.number
    load = _settled_chip_top_up(session, card)
    number, load_id = card.number, load.id

    def confirm(terminal: str):
        def run():
            own = db.new_session()
            try:
                confirmation = "c1" if same_confirmation else f"c-{terminal}"
                confirm_load(
                    own,
                    number,
                    load_id,
                    3000,
                    confirmation_id=confirmation,
                    terminal=terminal,
                )
                own.commit()
                return "confirmed"
            except LoadExceeded:
                own.rollback()
                return "exceeded"
            finally:
                own.close()

        return run

    outcomes = together(confirm("T1"), confirm("T2"))

    if same_confirmation:
        assert outcomes == ["confirmed", "confirmed"]  # the second is a replay
    else:
        assert sorted(outcomes) == ["confirmed", "exceeded"]
    session.rollback()
    assert session.get(PurseLoad, load_id).loaded_fen == 3000
    assert _balance(session, number) == 0
    assert _on_chip(session, number) == 3000
    assert len(_entries(session, f"load:{load_id}")) == 1
    assert ledger.check_ledger(session) == []


# -- the campus code and PIN ---------------------------------------------------------


@pytest.mark.postgres
def test_a_pin_changed_while_a_terminal_pays_with_the_old_one_refuses_it(
    live_app, session, make_card, merchant
):
    card = make_card(balance_fen=20000)
    number = card.number
    config = live_app.app.extensions["payments.pos"]
    pin.set_pin(session, card.id, "135790", config.now())
    code, _ = codes.issue_code(
        session, card.id, now=config.now(), lifetime_seconds=3600
    )
    session.commit()
    till = _signed_terminal(session, merchant, live_app.app, live_app.url)
    changer = db.new_session()
    try:
        # The student's new PIN is written, not yet committed ...
        pin.set_pin(changer, card.id, "246801", config.now())
        with ThreadPoolExecutor(1) as pool:
            # ... when the till sends the old one; it waits for the change.
            old = pool.submit(till.pay, 6000, code=code, pin="135790")
            try:
                old.result(timeout=1)
            except FutureTimeout:
                pass
            changer.commit()
            refused = old.result(timeout=30)
    finally:
        changer.close()
    accepted = till.pay(6000, code=code, pin="246801")

    assert (refused[0], refused[1]["code"]) == (403, "pin_wrong")
    assert accepted[1]["state"] == "succeeded"  # the refusal did not use the code
    assert _balance(session, number) == 14000
    assert _entries(session, accepted[1]["out_trade_no"]) == [
        ("payment", f"pos:{accepted[1]['out_trade_no']}")
    ]
    assert ledger.check_ledger(session) == []


@pytest.mark.postgres
def test_wrong_pins_at_ten_terminals_at_once_lock_after_exactly_five(
    live_app, session, make_card, merchant
):
    card = make_card(balance_fen=20000)
    number = card.number
    config = live_app.app.extensions["payments.pos"]
    pin.set_pin(session, card.id, "135790", config.now())
    session.commit()
    tills = [
        _signed_terminal(session, merchant, live_app.app, live_app.url)
        for _ in range(10)
    ]

    answers = together(
        *[
            lambda till=till: till.pay(6000, card_number=card.number, pin="000000")
            for till in tills
        ]
    )
    after = tills[0].pay(6000, card_number=card.number, pin="135790")

    codes_seen = sorted(answer["code"] for _, answer in answers)
    assert codes_seen == ["pin_locked"] * 5 + ["pin_wrong"] * 5
    assert (after[0], after[1]["code"]) == (409, "pin_locked")
    session.rollback()
    row = session.get(CardPin, card.id)
    assert row.locked_until is not None
    assert _balance(session, number) == 20000
    assert ledger.check_ledger(session) == []


# -- the daily cap from several phones ---------------------------------------------


@pytest.mark.postgres
def test_top_ups_from_three_phones_at_once_never_pass_the_daily_cap(
    live_app, student_browser, session
):
    card = student_browser.card
    number = card.number
    phones = [student_browser(DESKTOP) for _ in range(3)]

    def start(phone):
        return phone.post(
            f"{live_app.url}/api/top-ups",
            json={
                "amount": "800",
                "channel": "wechat",
                "payer_kind": "native",
                "card": card.number,
            },
            timeout=30,
        )

    answers = together(*[lambda phone=phone: start(phone) for phone in phones])

    assert sorted(answer.status_code for answer in answers) == [201, 201, 409]
    refused = next(answer.json() for answer in answers if answer.status_code == 409)
    assert (refused["code"], refused["remaining_fen"]) == ("top_up_refused", 40_000)
    session.rollback()
    opened = session.scalars(select(TopUp).where(TopUp.card_id == card.id)).all()
    assert sorted(t.state for t in opened) == [TopUpState.PAYING] * 2
    assert sum(t.amount_fen for t in opened) == 160_000
    assert _balance(session, number) == 1000
    assert ledger.check_ledger(session) == []
