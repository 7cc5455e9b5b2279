"""No full payment code is kept anywhere: after the web POS takes a WeChat, an
Alipay and a campus code and a card tap, every column of every row of every
table is searched for them."""

from __future__ import annotations

import hashlib
import logging

import requests
from sqlalchemy import select

from campus.auth import Role, create_operator
from campus.database import Base
from payments.channels.campus import codes
from payments.merchants import Terminal
from payments.pos.models import CashierMerchant, PosPayment


def _places(session, secret: str) -> set[tuple[str, str, str]]:
    """Where ``secret`` occurs: (table, column, the row's primary key)."""
    session.rollback()
    found = set()
    for table in Base.metadata.sorted_tables:
        for row in session.execute(select(table)).mappings():
            key = ",".join(str(row[column.name]) for column in table.primary_key)
            for name, value in row.items():
                if value is not None and secret in str(value):
                    found.add((table.name, name, key))
    return found


def _our_log(caplog) -> str:
    """Our own log records with their fields. The loopback server's access log
    is left out: it logs the sandbox gateway's URLs, which stand for the
    channel's own servers."""
    return "\n".join(
        repr(vars(record))
        for record in caplog.records
        if record.name.partition(".")[0] in {"campus", "payments"}
    )


def test_the_web_pos_stores_no_payment_code_anywhere(
    live_app, make_terminal, session, make_card, fast_poll, caplog
):
    caplog.set_level(logging.DEBUG)
    card = make_card(balance_fen=5000)
    tapped = make_card(balance_fen=5000)
    terminal = make_terminal(url=live_app.url, served=live_app.app)
    caplog.clear()  # opening a card logs its number, as the card's identity
    now = live_app.app.extensions["payments.pos"].now()
    campus_code, _ = codes.issue_code(session, card.id, now=now, lifetime_seconds=60)
    session.commit()
    wechat = live_app.sandbox.gateways["wechat"].current_code("demo-1")
    alipay = live_app.sandbox.gateways["alipay"].current_code("demo-1")
    # The card's number is its identity, kept on its card (and wherever opening
    # it put it); a tap must add no place of its own.
    card_number_before = _places(session, tapped.number)
    till = create_operator(session, "till-1", "correct horse battery", [Role.CASHIER])
    merchant_id = session.scalar(
        select(Terminal.merchant_id).where(Terminal.key_id == terminal.key_id)
    )
    session.add(CashierMerchant(operator_id=till.id, merchant_id=merchant_id))
    session.commit()
    cashier = requests.Session()
    cashier.post(
        f"{live_app.url}/api/operators/sign-in",
        json={"username": "till-1", "password": "correct horse battery"},
        timeout=10,
    ).raise_for_status()

    charges = [
        (wechat, {}),
        (alipay, {}),
        (campus_code, {}),
        (tapped.number, {"tap": "1"}),
    ]
    pages = [
        cashier.post(
            f"{live_app.url}/pos",
            data={"terminal": terminal.key_id, "amount": "3.00", "code": code, **more},
            timeout=60,
        )
        for code, more in charges
    ]

    assert [page.text.count('data-state="succeeded"') for page in pages] == [1] * 4
    for code in (wechat, alipay, campus_code):
        assert _places(session, code) == set(), code
        assert code not in _our_log(caplog)
    # Nor is a code to be found by hashing guesses: what a payment keeps of its
    # request is keyed, so the plain digest of the true request is not it.
    for order_no, amount_fen, kept in session.execute(
        select(
            PosPayment.terminal_order_no,
            PosPayment.amount_fen,
            PosPayment.request_hash,
        )
    ):
        for code, more in charges:
            source = "tap" if more else "code"
            text = f"web\n{order_no}\n{amount_fen}\n{source}\n{code}"
            assert kept and kept != hashlib.sha256(text.encode()).hexdigest()
    assert _places(session, tapped.number) == card_number_before
    assert tapped.number not in _our_log(caplog)
