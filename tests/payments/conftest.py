"""Real cards, merchants and operators, made through the same services the app uses."""

from __future__ import annotations

import itertools

import pytest
import requests
from sqlalchemy.orm import Session

from campus.people import Person, PersonKind
from payments import ledger
from payments.cards import Card, open_card
from payments.merchants import Merchant, MerchantKind, open_merchant

_numbers = itertools.count(1)


@pytest.fixture
def make_card(session: Session):
    def make(balance_fen: int = 0, **options) -> Card:
        serial = next(_numbers)
        person = Person(
            number=f"S{serial:07d}",
            kind=PersonKind.STUDENT,
            name_zh=f"测试{serial}",
            name_en=f"Test {serial}",
        )
        session.add(person)
        card = open_card(
            session, person, actor="test", number=f"8800{serial:08d}", **options
        )
        if balance_fen:
            ledger.transfer(
                session,
                kind=ledger.EntryKind.OPENING,
                idempotency_ref=f"opening:{card.number}",
                source=ledger.suspense_account(session),
                destination=card.wallet,
                amount_fen=balance_fen,
            )
        session.commit()
        return card

    return make


@pytest.fixture
def merchant(session: Session) -> Merchant:
    merchant = open_merchant(
        session,
        f"M{next(_numbers):05d}",
        "测试窗口",
        "Test window",
        MerchantKind.CANTEEN_WINDOW,
    )
    session.commit()
    return merchant


@pytest.fixture
def student_browser(live_app, make_card):
    card = make_card(balance_fen=1000)

    def browser(headers: dict[str, str]) -> requests.Session:
        session = requests.Session()
        session.headers.update(headers)
        signed_in = session.post(
            f"{live_app.url}/sign-in/dev?next=/card",
            data={"number": card.person.number},
            timeout=10,
        )
        assert signed_in.url.endswith("/card")
        return session

    browser.card = card
    return browser
