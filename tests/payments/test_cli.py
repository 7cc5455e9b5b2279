from __future__ import annotations

import pytest
from sqlalchemy import update

from payments.ledger import Account


def test_demo_seed_then_ledger_check_reports_balanced(app):
    runner = app.test_cli_runner()

    seeded = runner.invoke(args=["demo", "seed", "--students", "20"])
    again = runner.invoke(args=["demo", "seed", "--students", "20"])
    checked = runner.invoke(args=["ledger", "check"])

    assert seeded.exit_code == 0, seeded.output
    assert "20 students" in seeded.output
    assert "already present" in again.output
    assert checked.exit_code == 0
    assert "ledger balanced" in checked.output


@pytest.mark.unbalances_ledger("drifts a balance to prove `flask ledger check` fails")
def test_ledger_check_fails_naming_the_drifted_account(app, session, make_card):
    card = make_card(balance_fen=700)
    session.execute(
        update(Account).where(Account.id == card.wallet.id).values(balance_fen=1)
    )
    session.commit()

    result = app.test_cli_runner().invoke(args=["ledger", "check"])

    assert result.exit_code == 1
    assert f"wallet:{card.number}" in result.output
    assert "cached balance 1 fen, postings sum to 700 fen" in result.output


def test_card_lifecycle_from_the_command_line(app, make_card):
    holder = make_card().person.number
    runner = app.test_cli_runner()

    opened = runner.invoke(args=["card", "open", holder, "--number", "66660001"])
    frozen = runner.invoke(args=["card", "freeze", "66660001", "--reason", "lost"])
    balance = runner.invoke(args=["card", "balance", "66660001"])
    unfrozen = runner.invoke(args=["card", "unfreeze", "66660001", "--reason", "found"])
    closed = runner.invoke(args=["card", "close", "66660001", "--reason", "left"])
    statement = runner.invoke(args=["card", "statement", "66660001"])

    assert opened.exit_code == 0, opened.output
    assert "now frozen" in frozen.output
    assert "frozen" in balance.output and "¥0.00" in balance.output
    assert "now active" in unfrozen.output
    assert closed.exit_code == 0
    assert "balance ¥0.00" in statement.output


def test_command_line_errors_are_clear_and_exit_non_zero(app, make_card):
    card = make_card(balance_fen=100)
    runner = app.test_cli_runner()

    unknown = runner.invoke(args=["card", "freeze", "12345678", "--reason", "x"])
    with_money = runner.invoke(args=["card", "close", card.number, "--reason", "x"])

    assert unknown.exit_code == 1 and "card_not_found" in unknown.output
    assert with_money.exit_code == 1 and "invalid_card_transition" in with_money.output
