"""Top-ups refused at the HTTP edge: the JSON API and the student's form.

A refused top-up must leave nothing behind: no ``TopUp`` row, no journal entry, and
no call to a channel, because each of those is something finance would later have
to explain.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from payments import ledger
from payments.cards import CardStatus, change_status
from payments.channel_log import ChannelCall
from payments.topups import TopUp

DESKTOP = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
    "Accept-Language": "en",
}
# The desktop way to pay with each channel: a QR code to scan.
QR_KIND = {"wechat": "native", "alipay": "precreate"}

# Each is refused before any order exists. The default limits are 1 to 1000 yuan
# per top-up; "5000" passes parsing and is refused by the top-up limits instead.
BAD_AMOUNTS = [
    pytest.param("12.505", id="three-decimals"),
    pytest.param("-1", id="negative"),
    pytest.param("0", id="zero"),
    pytest.param("0.00", id="zero-with-fen"),
    pytest.param("0.99", id="below-the-minimum"),
    pytest.param("5000", id="above-the-maximum"),
    pytest.param("1000000000000", id="absurd"),
    pytest.param("abc", id="letters"),
    pytest.param("", id="empty"),
    pytest.param("1e3", id="exponent"),
    pytest.param("12,50", id="comma"),
    pytest.param("NaN", id="nan"),
    pytest.param("Infinity", id="infinity"),
]

# Not strings at all: refused by the request schema, before our parser.
NOT_STRINGS = [
    pytest.param(50, id="json-number"),
    pytest.param(12.5, id="json-float"),
    pytest.param(True, id="json-true"),
    pytest.param(None, id="json-null"),
    pytest.param(["50"], id="json-list"),
]


@pytest.fixture
def channel_calls(monkeypatch):
    """Every channel the top-up flow asks for, so that a test can say none was."""
    asked: list[str] = []

    def refuse(name):
        asked.append(name)
        raise AssertionError(f"a refused top-up reached the {name} channel")

    monkeypatch.setattr("payments.remote_top_up.channel_for", refuse)
    monkeypatch.setattr("payments.top_up_pages.channel_for", refuse)
    return asked


@pytest.fixture
def student(client, make_card):
    """A signed-in student with one card holding 10 yuan."""
    card = make_card(balance_fen=1000)
    signed_in = client.post("/sign-in/dev", data={"number": card.person.number})
    assert signed_in.status_code == 302
    return card


def _count(session, model) -> int:
    session.rollback()  # read what the requests committed, not an old snapshot
    return session.scalar(select(func.count()).select_from(model))


def _assert_nothing_written(session, channel_calls, entries_before: int) -> None:
    assert _count(session, TopUp) == 0
    assert _count(session, ledger.JournalEntry) == entries_before
    assert _count(session, ChannelCall) == 0
    assert channel_calls == []


def _assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["detail"]
    return body


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_the_api_refuses_a_bad_amount_and_writes_nothing(
    client, session, student, channel_calls, amount, channel
):
    entries = _count(session, ledger.JournalEntry)

    response = client.post(
        "/api/top-ups",
        json={"amount": amount, "channel": channel, "payer_kind": QR_KIND[channel]},
    )

    _assert_problem(response, 400, "invalid_amount")
    _assert_nothing_written(session, channel_calls, entries)


def test_an_amount_above_the_limit_says_the_limits(client, student, channel_calls):
    response = client.post("/api/top-ups", json={"amount": "5000", "channel": "wechat"})

    body = _assert_problem(response, 400, "invalid_amount")
    assert (body["minimum_fen"], body["maximum_fen"]) == (100, 100_000)


@pytest.mark.parametrize("amount", NOT_STRINGS)
def test_the_api_refuses_an_amount_that_is_not_a_string(
    client, session, student, channel_calls, amount
):
    entries = _count(session, ledger.JournalEntry)

    response = client.post("/api/top-ups", json={"amount": amount, "channel": "wechat"})

    body = _assert_problem(response, 400, "invalid_input")
    assert "amount" in str(body["errors"])
    _assert_nothing_written(session, channel_calls, entries)


def test_the_api_refuses_a_missing_amount(client, session, student, channel_calls):
    entries = _count(session, ledger.JournalEntry)

    response = client.post("/api/top-ups", json={"channel": "wechat"})

    _assert_problem(response, 400, "invalid_input")
    _assert_nothing_written(session, channel_calls, entries)


@pytest.mark.parametrize(
    "card_number",
    [
        pytest.param("880099999999", id="no-such-card"),
        pytest.param(None, id="another-students-card"),
    ],
)
def test_the_api_refuses_a_card_that_is_not_the_students(
    client, session, student, make_card, channel_calls, card_number
):
    other = make_card(balance_fen=500)
    entries = _count(session, ledger.JournalEntry)

    response = client.post(
        "/api/top-ups",
        json={
            "amount": "50",
            "channel": "wechat",
            "card": card_number or other.number,
        },
    )

    # Not 404 for a number that does not exist: a student cannot probe which card
    # numbers are real.
    _assert_problem(response, 403, "forbidden")
    _assert_nothing_written(session, channel_calls, entries)


@pytest.mark.parametrize("status", ["frozen", "lost", "closed"])
def test_the_api_refuses_a_card_that_is_not_active(
    client, session, make_card, channel_calls, status
):
    card = make_card()  # a closed card has a zero balance
    change_status(session, card.number, CardStatus(status), reason="t", actor="t")
    session.commit()
    client.post("/sign-in/dev", data={"number": card.person.number})
    entries = _count(session, ledger.JournalEntry)

    response = client.post(
        "/api/top-ups", json={"amount": "50", "channel": "wechat", "card": card.number}
    )

    body = _assert_problem(response, 409, "card_not_active")
    assert body["card_status"] == status
    _assert_nothing_written(session, channel_calls, entries)


def _form_error(response) -> str:
    """The refusal the form sends the browser back to the card page with."""
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/card"
    return parse_qs(location.query)["error"][0]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_the_form_sends_a_bad_amount_back_with_the_reason(
    client, session, student, channel_calls, amount
):
    entries = _count(session, ledger.JournalEntry)

    response = client.post(
        "/card/top-up",
        data={"card": student.number, "amount": amount, "channel": "wechat"},
        headers=DESKTOP,
    )

    # The form is a page, not an API: the refusal comes back on the card page,
    # where the student can correct the amount.
    reason = _form_error(response)
    page = client.get(response.headers["Location"], headers=DESKTOP)
    assert reason and reason in page.get_data(as_text=True)
    _assert_nothing_written(session, channel_calls, entries)


def test_the_form_refuses_a_closed_card(client, session, make_card, channel_calls):
    card = make_card()
    change_status(session, card.number, CardStatus.CLOSED, reason="t", actor="t")
    session.commit()
    client.post("/sign-in/dev", data={"number": card.person.number})

    response = client.post(
        "/card/top-up",
        data={"card": card.number, "amount": "50", "channel": "wechat"},
        headers=DESKTOP,
    )

    assert "closed" in _form_error(response)
    _assert_nothing_written(session, channel_calls, 0)


def test_the_form_refuses_another_students_card(
    client, session, student, make_card, channel_calls
):
    other = make_card()
    entries = _count(session, ledger.JournalEntry)

    response = client.post(
        "/card/top-up",
        data={"card": other.number, "amount": "50", "channel": "wechat"},
        headers=DESKTOP,
    )

    _assert_problem(response, 403, "forbidden")
    _assert_nothing_written(session, channel_calls, entries)
