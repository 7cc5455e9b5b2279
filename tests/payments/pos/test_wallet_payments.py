"""Campus codes and card taps: the wallet pays in one transaction, once."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from campus.logs import mask_code
from payments import ledger
from payments.cards import CardStatus, change_status
from payments.channel_log import ChannelCall
from payments.channels.campus import codes, pin
from payments.pos.models import PosPayment
from payments.pos.routing import ALIPAY_CODE, WECHAT_CODE, UnrecognisedCode, channel_of

from .conftest import new_order_no


def _code_for(app, session, card) -> str:
    config = app.extensions["payments.pos"]
    code, _ = codes.issue_code(session, card.id, now=config.now(), lifetime_seconds=60)
    session.commit()
    return code


@pytest.mark.parametrize(
    ("code", "channel"),
    [
        ("134567890123456789", "wechat"),
        ("104567890123456789", "wechat"),
        ("2845678901234567", "alipay"),
        ("301234567890123456789012", "alipay"),
        ("7" + "0" * 27, "campus"),
    ],
)
def test_codes_route_by_their_digits(code, channel):
    assert channel_of(code) == channel


@pytest.mark.parametrize(
    "code", ["164567890123456789", "24456789012345678", "12345", "abc", "7" * 27]
)
def test_anything_else_is_unrecognised(code):
    with pytest.raises(UnrecognisedCode):
        channel_of(code)


def test_campus_codes_never_look_like_channel_codes(app, session, make_card):
    card = make_card()

    issued = [_code_for(app, session, card) for _ in range(50)]

    for code in issued:
        assert codes.CAMPUS_CODE.fullmatch(code)
        assert not WECHAT_CODE.fullmatch(code) and not ALIPAY_CODE.fullmatch(code)
        assert card.number not in code
    assert len(set(issued)) == 50


def test_a_campus_code_pays_from_the_wallet(
    app, session, terminal, make_card, merchant
):
    card = make_card(balance_fen=2000)
    code = _code_for(app, session, card)

    status, answer = terminal.pay(1250, code=code)

    assert (status, answer["state"], answer["channel"]) == (200, "succeeded", "campus")
    assert answer["code"] == mask_code(code)
    session.rollback()
    assert card.wallet.balance_fen == 750
    assert merchant.payable.balance_fen == 1250
    assert ledger.check_ledger(session) == []


def test_a_campus_code_used_twice_pays_once(
    app, session, terminal, make_terminal, make_card
):
    card = make_card(balance_fen=2000)
    code = _code_for(app, session, card)
    other = make_terminal()

    first = terminal.pay(500, code=code)
    second = other.pay(500, code=code)

    assert first[1]["state"] == "succeeded"
    assert second[1]["state"] == "failed"
    assert second[1]["failure_code"] == "campus_code_used"
    session.rollback()
    assert card.wallet.balance_fen == 1500


def test_an_expired_campus_code_is_refused(app, session, terminal, make_card):
    card = make_card(balance_fen=2000)
    code = _code_for(app, session, card)
    clock = app.extensions["campus.sandbox"].clock
    clock.advance(61)
    try:
        status, answer = terminal.pay(500, code=code)
    finally:
        clock.reset()

    assert answer["failure_code"] == "campus_code_invalid"
    session.rollback()
    assert card.wallet.balance_fen == 2000


def test_a_tapped_card_pays(session, terminal, make_card):
    card = make_card(balance_fen=2000)

    status, answer = terminal.pay(300, card_number=card.number)

    assert answer["state"] == "succeeded"
    session.rollback()
    assert card.wallet.balance_fen == 1700


def test_a_tapped_payment_records_the_card_and_its_entry(session, terminal, make_card):
    card = make_card(balance_fen=2000)

    _, answer = terminal.pay(300, card_number=card.number)

    session.rollback()
    payment = session.query(PosPayment).one()
    assert payment.card_id == card.id
    reference = f"pos:{payment.out_trade_no}"
    assert payment.entry_id == ledger.find_entry_id(session, reference)


def test_a_code_the_wallet_refused_is_not_used_up(app, session, terminal, make_card):
    card = make_card(balance_fen=100)
    code = _code_for(app, session, card)

    refused = terminal.pay(300, code=code)[1]
    ledger.transfer(
        session,
        kind=ledger.EntryKind.OPENING,
        idempotency_ref=f"more:{card.number}",
        source=ledger.suspense_account(session),
        destination=card.wallet,
        amount_fen=500,
    )
    session.commit()
    paid = terminal.pay(300, code=code)[1]

    assert (refused["state"], refused["failure_code"]) == (
        "failed",
        "insufficient_funds",
    )
    assert paid["state"] == "succeeded"
    session.rollback()
    assert card.wallet.balance_fen == 300


def test_an_order_sent_again_to_an_emptied_wallet_is_the_first_payment(
    session, terminal, make_card
):
    # The repeat debits nothing: its own attempt fails and is rolled back, and
    # the answer is the first payment, still succeeded.
    card = make_card(balance_fen=300)
    order_no = new_order_no()

    first = terminal.pay(300, order_no, card_number=card.number)[1]
    again = terminal.pay(300, order_no, card_number=card.number)[1]

    assert (again["out_trade_no"], again["state"]) == (
        first["out_trade_no"],
        "succeeded",
    )
    session.rollback()
    assert session.query(PosPayment).count() == 1
    assert card.wallet.balance_fen == 0
    assert ledger.check_ledger(session) == []


def test_the_wallet_never_goes_negative(session, terminal, make_card):
    card = make_card(balance_fen=200)

    status, answer = terminal.pay(300, card_number=card.number)

    assert (answer["state"], answer["failure_code"]) == ("failed", "insufficient_funds")
    session.rollback()
    assert card.wallet.balance_fen == 200


@pytest.mark.parametrize("status", [CardStatus.FROZEN, CardStatus.LOST])
def test_a_frozen_or_lost_card_is_refused(app, session, terminal, make_card, status):
    card = make_card(balance_fen=2000)
    code = _code_for(app, session, card)
    change_status(session, card.number, status, actor="test", reason="test")
    session.commit()

    _, answer = terminal.pay(300, code=code)

    assert (answer["state"], answer["failure_code"]) == ("failed", "card_not_active")
    session.rollback()
    assert card.wallet.balance_fen == 2000


def test_a_large_payment_needs_the_pin(app, session, terminal, make_card):
    card = make_card(balance_fen=20000)
    pin.set_pin(session, card.id, "135790", app.extensions["payments.pos"].now())
    session.commit()
    code = _code_for(app, session, card)
    order_no = new_order_no()

    without = terminal.pay(6000, order_no, code=code)
    wrong = terminal.pay(6000, order_no, code=code, pin="000000")
    right = terminal.pay(6000, order_no, code=code, pin="135790")

    assert (without[0], without[1]["code"]) == (403, "pin_required")
    assert (wrong[0], wrong[1]["code"]) == (403, "pin_wrong")
    assert right[1]["state"] == "succeeded"
    session.rollback()
    assert card.wallet.balance_fen == 14000


def test_the_same_order_number_returns_the_first_payment(session, terminal, make_card):
    card = make_card(balance_fen=2000)
    order_no = new_order_no()

    first = terminal.pay(300, order_no, card_number=card.number)
    again = terminal.pay(300, order_no, card_number=card.number)
    changed = terminal.pay(301, order_no, card_number=card.number)

    assert again[1]["out_trade_no"] == first[1]["out_trade_no"]
    assert (changed[0], changed[1]["code"]) == (422, "idempotency_mismatch")
    session.rollback()
    assert card.wallet.balance_fen == 1700


def test_the_same_request_in_other_json_spelling_is_the_same_request(
    session, terminal, make_card
):
    card = make_card(balance_fen=2000)
    order_no = new_order_no()
    path = "/api/terminal/payments"

    first = terminal.send(
        "POST",
        path,
        raw=f'{{"order_no":"{order_no}","amount_fen":300,'
        f'"card_number":"{card.number}"}}'.encode(),
    )
    # The same fields, in another order and with spaces: the same request.
    again = terminal.send(
        "POST",
        path,
        raw=f'{{ "card_number": "{card.number}", "amount_fen": 300, '
        f'"order_no": "{order_no}" }}'.encode(),
    )

    assert first[0] == 200 and again[0] == 200
    assert again[1]["out_trade_no"] == first[1]["out_trade_no"]
    session.rollback()
    assert card.wallet.balance_fen == 1700


def test_the_same_idempotency_key_returns_the_first_payment(
    session, terminal, make_card
):
    card = make_card(balance_fen=2000)
    key = {"Idempotency-Key": "k-123"}

    first = terminal.pay(300, "A1", card_number=card.number, headers=key)
    again = terminal.pay(300, "A1", card_number=card.number, headers=key)
    other_body = terminal.pay(300, "A2", card_number=card.number, headers=key)

    assert again[1]["out_trade_no"] == first[1]["out_trade_no"]
    assert other_body[0] == 422
    assert session.query(PosPayment).count() == 1


def test_an_unrecognised_code_is_refused_and_never_logged(terminal, session, caplog):
    status, answer = terminal.pay(300, code="9912345678901234567")

    assert (status, answer["code"]) == (400, "unrecognised_code")
    assert "9912345678901234567" not in caplog.text
    assert session.query(PosPayment).count() == 0
    assert session.query(ChannelCall).count() == 0
    assert re.fullmatch(r"9912\*+67", answer["code_masked"])


def test_five_wrong_pins_lock_pin_payments(app, session, terminal, make_card):
    card = make_card(balance_fen=20000)
    now = app.extensions["payments.pos"].now()
    pin.set_pin(session, card.id, "135790", now)
    session.commit()

    wrong = [
        terminal.pay(6000, card_number=card.number, pin="000000")[1]["code"]
        for _ in range(5)
    ]
    locked = terminal.pay(6000, card_number=card.number, pin="135790")

    assert wrong == ["pin_wrong"] * 5
    assert (locked[0], locked[1]["code"]) == (409, "pin_locked")
    session.rollback()
    assert card.wallet.balance_fen == 20000


def test_an_unpaid_qr_order_expires(app, session, terminal):
    from payments.pos.service import resolve_stale

    status, opened = terminal.send(
        "POST", "/api/terminal/qr-orders", {"order_no": "Q1", "amount_fen": 500}
    )
    later = app.extensions["payments.pos"].now() + dt.timedelta(minutes=16)

    report = resolve_stale(now=later)

    assert (status, opened["state"]) == (202, "awaiting")
    assert report.expired == 1
    session.rollback()
    assert terminal.query("Q1")[1]["state"] == "failed"


def test_the_answer_is_what_the_output_schema_dumps(terminal, make_card, session):
    # The answer is built by hand, without the schema: it must not differ.
    from payments.pos import service
    from payments.pos.api import PaymentOut
    from payments.pos.models import PosPayment

    card = make_card(balance_fen=500)
    for amount in (300, 300):  # succeeded, then failed for want of money
        status, answer = terminal.pay(amount, card_number=card.number)
        payment = session.query(PosPayment).filter_by(
            out_trade_no=answer["out_trade_no"]
        )
        dumped = PaymentOut().dump(service.payment_out(payment.one()))

        assert status == 200
        assert answer == dumped
    assert answer["state"] == "failed"


@pytest.mark.parametrize(
    "body",
    [
        {"amount_fen": 300},
        {"order_no": "", "amount_fen": 300},
        {"order_no": "x" * 65, "amount_fen": 300},
        {"order_no": "o", "amount_fen": 0},
        {"order_no": "o", "amount_fen": True},
        {"order_no": "o", "amount_fen": "3"},
        {"order_no": "o", "amount_fen": 3.5},
        {"order_no": "o", "amount_fen": 300, "code": ""},
        {"order_no": "o", "amount_fen": 300, "card_number": 5},
        {"order_no": "o", "amount_fen": 300, "description": None},
        {"order_no": "o", "amount_fen": 300, "colour": "red"},
        ["not", "an", "object"],
    ],
)
def test_a_body_the_schema_refuses_is_refused_with_its_errors(terminal, app, body):
    # What the hand check lets through would load the same through the schema;
    # what it does not is answered by the schema itself.
    from marshmallow import ValidationError

    from payments.pos.api import PaymentIn

    with app.test_request_context():
        try:
            PaymentIn().load(body)
        except ValidationError as error:
            expected = error.messages
        else:
            expected = None

    status, answer = terminal.send("POST", "/api/terminal/payments", body)

    if expected is None:
        # Loaded (a numeric string is a number to the schema), then refused by
        # the payment itself: neither code nor card.
        assert "errors" not in answer
    else:
        assert (status, answer["code"]) == (400, "invalid_input")
        assert answer["errors"] == {"json": expected}


def test_the_stale_job_leaves_a_flagged_payment_to_finance(session, merchant):
    from payments.pos.models import PaymentSource, PaymentState
    from payments.pos.service import _claim_stale

    created = dt.datetime(2031, 3, 4, 4, 0, tzinfo=dt.UTC)
    for number, flagged in (("P20310304flagged1", True), ("P20310304waiting1", False)):
        session.add(
            PosPayment(
                out_trade_no=number,
                merchant_id=merchant.id,
                source=PaymentSource.CODE,
                channel="alipay",
                amount_fen=900,
                state=PaymentState.PAYING,
                description="lunch",
                created_at=created,
                needs_review=flagged,
                review_reason="channel says 1000 fen, payment is 900"
                if flagged
                else None,
            )
        )
    session.commit()

    claimed = _claim_stale(session, created + dt.timedelta(hours=1), 120)
    session.commit()

    # The flagged one is finance's: asked again it would only be flagged again.
    assert claimed == ["P20310304waiting1"]
