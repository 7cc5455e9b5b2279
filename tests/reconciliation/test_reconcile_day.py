"""A day of top-ups through the sandbox, reconciled against the sandbox's real
WeChat Pay bill: each planted problem lands under its kind, each named by outcome."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import itertools
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from campus.settings import Settings, SettingsError
from payments import ledger
from payments.channels import channel_for
from payments.topups import TopUpState, find_top_up
from reconciliation import run as run_module
from reconciliation.bills import kept as kept_module
from reconciliation.models import (
    Discrepancy,
    DiscrepancyStatus,
    ReconciliationRun,
    RunState,
)
from reconciliation.run import (
    BillRejected,
    Phase,
    RunInProgress,
    fee_rate,
    reconcile_day,
)
from tests.live import in_app
from tests.payments.test_notifications import DESKTOP, _open_and_pay

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Each test trades on a day of its own, so that the sandbox's bill (the sandbox is
# shared by the whole session) holds only that test's orders.
_days = itertools.count(1)


@pytest.fixture
def trading_day(live_app) -> dt.date:
    day = dt.date(2031, 1, 1) + dt.timedelta(days=next(_days) * 10)
    live_app.sandbox.clock.set(dt.datetime.combine(day, dt.time(12), SHANGHAI))
    return day


def _after_bills_are_ready(live_app, day: dt.date) -> None:
    live_app.sandbox.clock.set(
        dt.datetime.combine(day + dt.timedelta(days=1), dt.time(10, 30), SHANGHAI)
    )


def _reconcile(live_app, day, **options):
    return in_app(live_app, lambda: reconcile_day("wechat", day, **options))


def _discrepancies(session, day) -> dict[str, tuple[str, str]]:
    session.rollback()
    return {
        item.key: (item.kind, item.status.value)
        for item in session.scalars(select(Discrepancy).where(Discrepancy.day == day))
    }


def _pay(live_app, student_browser, amount="50"):
    browser = student_browser.browser
    return _open_and_pay(live_app, browser, student_browser.card, amount)


@pytest.fixture(params=["line_by_line", "by_column"])
def reading(request, monkeypatch):  # type: ignore[no-untyped-def]
    """Both ways a WeChat bill is read and matched: line by line (a small bill),
    or into columns matched against the day's orders by column (a big one,
    ``READ_BY_COLUMN_BYTES``)."""
    size = 0 if request.param == "by_column" else 1 << 40
    monkeypatch.setattr(run_module, "READ_BY_COLUMN_BYTES", size)
    return request.param


@pytest.fixture
def shopper(live_app, student_browser):
    student_browser.browser = student_browser(DESKTOP)
    return student_browser


def test_a_clean_day_is_all_matched(live_app, shopper, session, trading_day, reading):
    numbers = [_pay(live_app, shopper) for _ in range(3)]
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)

    run = _reconcile(live_app, trading_day)

    assert run.state is RunState.FINISHED and run.lines == 3
    assert run.counts["matched"] == 3
    assert _discrepancies(session, trading_day) == {}
    assert all(find_top_up(session, n).state is TopUpState.SUCCEEDED for n in numbers)


def test_a_lost_notification_is_repaired_and_a_late_one_credits_nothing(
    live_app, shopper, session, trading_day, reading
):
    card = shopper.card
    live_app.sandbox.faults.set("wechat", "notification", "delay")
    live_app.sandbox.faults.set("wechat", "notification_delay_seconds", 3 * 86400)
    number = _pay(live_app, shopper)
    _after_bills_are_ready(live_app, trading_day)

    _reconcile(live_app, trading_day)
    repaired_balance = (session.rollback(), card.wallet.balance_fen)[1]
    live_app.sandbox.clock.advance(3 * 86400)
    late = live_app.sandbox.outbox.deliver_due()

    assert _discrepancies(session, trading_day) == {
        number: ("channel_only", "repaired")
    }
    assert repaired_balance == 6000
    assert late == 1  # acknowledged, so the channel stops
    session.rollback()
    assert card.wallet.balance_fen == 6000
    assert ledger.check_ledger(session) == []


def test_a_line_missing_from_the_bill_is_held_then_opened(
    live_app, shopper, session, trading_day
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "missing_line", number)
    _pay(live_app, shopper)  # the day still has a bill
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)

    _reconcile(live_app, trading_day, hold_days=1)
    held = _discrepancies(session, trading_day)[number]
    later = trading_day + dt.timedelta(days=2)
    live_app.sandbox.clock.set(dt.datetime.combine(later, dt.time(12), SHANGHAI))
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, later)
    _reconcile(live_app, later, hold_days=1)

    assert held == ("ours_only", "held")
    assert _discrepancies(session, trading_day)[number] == ("ours_only", "open")


def test_an_order_paid_at_midnight_waits_for_the_next_bill(
    live_app, shopper, session, trading_day, reading
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "after_midnight", number)
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)

    _reconcile(live_app, trading_day)
    first = _discrepancies(session, trading_day)[number]
    next_day = trading_day + dt.timedelta(days=1)
    _after_bills_are_ready(live_app, next_day)
    second = _reconcile(live_app, next_day)

    assert first == ("ours_only", "held")
    assert _discrepancies(session, trading_day)[number] == ("ours_only", "matched_late")
    assert second.counts["matched_late"] == 1


def test_a_changed_amount_is_an_amount_mismatch(
    live_app, shopper, session, trading_day, reading
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "changed_amount", number)
    _after_bills_are_ready(live_app, trading_day)

    _reconcile(live_app, trading_day)

    session.rollback()
    item = session.scalars(select(Discrepancy).where(Discrepancy.key == number)).one()
    assert (item.kind, item.status) == ("amount_mismatch", DiscrepancyStatus.OPEN)
    assert (item.our_amount_fen, item.channel_amount_fen) == (5000, 5100)


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_a_bill_that_fails_its_hash_value_stops_the_run_and_changes_nothing(
    live_app, shopper, session, trading_day, reading, damage
):
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    number = _pay(live_app, shopper)
    live_app.sandbox.faults.set("wechat", "bill_download", damage)
    _after_bills_are_ready(live_app, trading_day)

    with pytest.raises(BillRejected, match="does not match its hash_value"):
        _reconcile(live_app, trading_day)

    assert _discrepancies(session, trading_day) == {}
    assert find_top_up(session, number).state is TopUpState.PAYING
    failed = session.scalars(
        select(ReconciliationRun).where(ReconciliationRun.day == trading_day)
    ).one()
    assert failed.state is RunState.FAILED and "hash_value" in (failed.error or "")


def test_a_rerun_of_a_finished_day_changes_nothing(
    live_app, shopper, session, trading_day
):
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    _pay(live_app, shopper)
    _after_bills_are_ready(live_app, trading_day)
    first = _reconcile(live_app, trading_day)
    before = _discrepancies(session, trading_day)
    balance = shopper.card.wallet.balance_fen

    again = _reconcile(live_app, trading_day)

    assert again.id == first.id and again.attempts == first.attempts
    assert _discrepancies(session, trading_day) == before
    session.rollback()
    assert shopper.card.wallet.balance_fen == balance


def test_a_day_being_reconciled_is_refused_to_a_second_run(
    live_app, shopper, session, trading_day
):
    from campus import clock
    from reconciliation.run import _claim

    _pay(live_app, shopper)
    _after_bills_are_ready(live_app, trading_day)
    # A run that started a moment ago and is still going.
    in_app(live_app, lambda: _claim("wechat", trading_day, clock.now()))

    with pytest.raises(RunInProgress):
        _reconcile(live_app, trading_day)


def test_the_command_line_reconciles_a_day_and_reports_each_channel(
    live_app, shopper, session, trading_day
):
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)
    runner = live_app.app.test_cli_runner()

    result = in_app(
        live_app,
        lambda: runner.invoke(
            args=["reconcile", "run", "--date", trading_day.isoformat()]
        ),
    )

    assert f"wechat {trading_day}: finished, 1 lines;" in result.output
    assert "matched 1" in result.output
    # No Alipay trade that day: an empty bill, nothing to match.
    assert f"alipay {trading_day}: finished, 0 lines;" in result.output


def _trade_a_faulty_day(live_app, shopper, day: dt.date) -> list[str]:
    """Two clean top-ups, a changed amount, a line missing from the bill and three
    lost notifications, all of 10 yuan: every order number, in that order."""
    live_app.sandbox.faults.clear()
    live_app.sandbox.clock.set(dt.datetime.combine(day, dt.time(12), SHANGHAI))
    numbers = [_pay(live_app, shopper, amount="10") for _ in range(4)]
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "changed_amount", numbers[2])
    live_app.sandbox.faults.set("wechat", "bill", "missing_line", numbers[3])
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    numbers += [_pay(live_app, shopper, amount="10") for _ in range(3)]
    _after_bills_are_ready(live_app, day)
    return numbers


def _outcome(session, day: dt.date, numbers: list[str]) -> list[tuple]:
    """The day's discrepancies by the position of their order, so that two days of
    the same trading compare equal."""
    session.rollback()
    items = session.scalars(select(Discrepancy).where(Discrepancy.day == day)).all()
    return sorted(
        (
            numbers.index(item.key),
            item.kind,
            item.status.value,
            item.our_amount_fen,
            item.channel_amount_fen,
        )
        for item in items
    )


def test_a_run_killed_half_way_is_finished_by_the_next_one(
    live_app, shopper, session, trading_day, reading
):
    # Hold days beyond the gap between the two days: neither run releases the
    # other's held item.
    options = {"batch": 2, "hold_days": 7}
    balance = (session.rollback(), shopper.card.wallet.balance_fen)[1]
    reference_numbers = _trade_a_faulty_day(live_app, shopper, trading_day)
    reference = _reconcile(live_app, trading_day, **options)
    reference_gain = (session.rollback(), shopper.card.wallet.balance_fen)[1] - balance
    balance += reference_gain
    killed_day = trading_day + dt.timedelta(days=5)
    numbers = _trade_a_faulty_day(live_app, shopper, killed_day)

    class Killed(Exception):
        pass

    def kill_after_first_batch(phase, done, total):
        if phase is Phase.RECORD:
            raise Killed(f"{done} of {total}")

    with pytest.raises(Killed):
        _reconcile(live_app, killed_day, progress=kill_after_first_batch, **options)
    half = _discrepancies(session, killed_day)
    live_app.sandbox.clock.advance(3600)  # the dead run's lease runs out
    finished = _reconcile(live_app, killed_day, **options)

    # The first batch was committed, one of its lost notifications repaired.
    assert sorted(half.values()) == [
        ("amount_mismatch", "open"),
        ("channel_only", "repaired"),
    ]
    assert finished.state is RunState.FINISHED and finished.attempts == 2
    assert finished.counts == reference.counts
    assert reference.counts["repaired"] == 3 and reference.counts["matched"] == 2
    assert _outcome(session, killed_day, numbers) == _outcome(
        session, trading_day, reference_numbers
    )
    session.rollback()
    assert shopper.card.wallet.balance_fen - balance == reference_gain == 7 * 1000
    assert ledger.check_ledger(session) == []


def test_a_bill_given_to_the_run_is_checked_like_a_downloaded_one(
    live_app, shopper, session, trading_day, reading
):
    live_app.sandbox.faults.set("wechat", "notification", "drop")
    number = _pay(live_app, shopper)
    _after_bills_are_ready(live_app, trading_day)
    bill = in_app(live_app, lambda: channel_for("wechat").download_bill(trading_day))
    text = bill.content.decode()
    summary = text.rstrip("\r\n").rsplit("\r\n", 1)[1]
    wrong = text.replace(summary, summary.replace("`1,", "`2,", 1)).encode()
    miscounted = dataclasses.replace(
        bill, content=wrong, sha256=hashlib.sha256(wrong).hexdigest()
    )
    another_day = dataclasses.replace(bill, day=trading_day + dt.timedelta(days=1))

    with pytest.raises(BillRejected, match="summary counts 2 rows"):
        _reconcile(live_app, trading_day, bill=miscounted)
    # Matching runs without the cyclic collector: a refused bill turns it back on.
    assert gc.isenabled()
    with pytest.raises(BillRejected, match="given the wechat bill of"):
        _reconcile(live_app, trading_day, bill=another_day)
    with pytest.raises(BillRejected, match="sha256"):
        _reconcile(live_app, trading_day, bill=dataclasses.replace(bill, content=wrong))
    assert _discrepancies(session, trading_day) == {}
    assert find_top_up(session, number).state is TopUpState.PAYING

    run = _reconcile(live_app, trading_day, bill=bill)

    assert run.state is RunState.FINISHED and run.counts["repaired"] == 1
    assert _discrepancies(session, trading_day) == {
        number: ("channel_only", "repaired")
    }


def _twice(cell: str) -> str:
    """A summary cell of a one-line bill, for the same line listed twice."""
    return str(Decimal(cell) * 2)


def test_a_payment_listed_twice_is_matched_once_and_the_repeat_shown(
    live_app, shopper, session, trading_day, reading
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)
    bill = in_app(live_app, lambda: channel_for("wechat").download_bill(trading_day))
    header, row, totals, summary = bill.content.decode().rstrip("\r\n").split("\r\n")
    doubled = ",".join("`" + _twice(cell[1:]) for cell in summary.split(","))
    content = "\r\n".join([header, row, row, totals, doubled]).encode() + b"\r\n"
    listed_twice = dataclasses.replace(
        bill, content=content, sha256=hashlib.sha256(content).hexdigest()
    )

    run = _reconcile(live_app, trading_day, bill=listed_twice)

    assert run.state is RunState.FINISHED and run.lines == 2
    assert (run.counts["matched"], run.counts["status_mismatch"]) == (1, 1)
    assert _discrepancies(session, trading_day) == {number: ("status_mismatch", "open")}
    item = session.scalars(
        select(Discrepancy).where(Discrepancy.day == trading_day)
    ).one()
    assert item.note == "listed again in the same bill" and item.bill_line == 3


@pytest.mark.parametrize("failing", ["keeping the bill", "recording"])
def test_a_run_that_fails_for_another_reason_says_so_at_once(
    live_app, shopper, session, trading_day, monkeypatch, failing
):
    _pay(live_app, shopper)
    _after_bills_are_ready(live_app, trading_day)
    if failing == "keeping the bill":
        error: Exception = OSError(28, "No space left on device")
        target = (kept_module, "write_to_disk")
    else:
        error = ConnectionError("server closed the connection unexpectedly")
        target = (run_module, "_record_all")

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(*target, fail)
    with pytest.raises(type(error)):
        _reconcile(live_app, trading_day)
    session.rollback()
    failed = session.scalars(
        select(ReconciliationRun).where(ReconciliationRun.day == trading_day)
    ).one()

    # Not left running until its lease runs out: failed, with why.
    assert failed.state is RunState.FAILED and failed.locked_until is None
    assert f"{type(error).__name__}: {error}" == failed.error
    monkeypatch.undo()
    finished = _reconcile(live_app, trading_day)
    assert finished.state is RunState.FINISHED and finished.counts["repaired"] == 1


def test_reconciliation_settings_are_read_from_the_environment():
    defaults = Settings.from_environ({})
    chosen = Settings.from_environ(
        {
            "CAMPUS_RECONCILE_HOLD_DAYS": "5",
            "CAMPUS_RECONCILE_FEE_RATE_WECHAT": "38",
            "CAMPUS_RECONCILE_FEE_RATE_ALIPAY": "55",
        }
    )

    assert (defaults.reconcile_hold_days, fee_rate(defaults, "wechat")) == (3, 60)
    assert fee_rate(defaults, "alipay") == 60
    assert chosen.reconcile_hold_days == 5
    assert (fee_rate(chosen, "wechat"), fee_rate(chosen, "alipay")) == (38, 55)
    with pytest.raises(SettingsError, match="RECONCILE_HOLD_DAYS"):
        Settings.from_environ({"CAMPUS_RECONCILE_HOLD_DAYS": "-1"})
    with pytest.raises(SettingsError, match="RECONCILE_FEE_RATE_ALIPAY"):
        Settings.from_environ({"CAMPUS_RECONCILE_FEE_RATE_ALIPAY": "10001"})


def test_a_run_holds_and_checks_fees_as_the_settings_say(
    live_app, shopper, session, trading_day
):
    settings = live_app.app.extensions["campus.settings"]
    live_app.app.extensions["campus.settings"] = dataclasses.replace(
        settings, reconcile_hold_days=5, reconcile_fee_rate_wechat=38
    )
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "missing_line", number)
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)

    run = _reconcile(live_app, trading_day)

    session.rollback()
    held = session.scalars(select(Discrepancy).where(Discrepancy.key == number)).one()
    assert held.hold_until == trading_day + dt.timedelta(days=5)
    # The sandbox charges 0.6 %: at a contract rate of 0.38 % the fees disagree.
    assert run.counts["fee_mismatch"] == 1


def test_the_command_line_holds_for_the_days_it_is_given(
    live_app, shopper, session, trading_day
):
    number = _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    live_app.sandbox.faults.set("wechat", "bill", "missing_line", number)
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)
    runner = live_app.app.test_cli_runner()
    day = trading_day.isoformat()

    result = in_app(
        live_app,
        lambda: runner.invoke(
            args=[
                "reconcile",
                "run",
                "--date",
                day,
                "--channel",
                "wechat",
                "--hold-days",
                "1",
            ]
        ),
    )

    assert result.exit_code == 0, result.output
    session.rollback()
    held = session.scalars(select(Discrepancy).where(Discrepancy.key == number)).one()
    assert held.hold_until == trading_day + dt.timedelta(days=1)


def test_a_run_reports_progress_through_download_match_and_record(
    live_app, shopper, session, trading_day, monkeypatch
):
    for _ in range(3):
        _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)
    monkeypatch.setattr(run_module, "PROGRESS_EVERY", 1)
    calls = []

    _reconcile(live_app, trading_day, progress=lambda *call: calls.append(call))

    phases = [phase for phase, _, _ in calls]
    assert sorted(set(phases), key=phases.index) == [
        Phase.DOWNLOAD,
        Phase.MATCH,
        Phase.RECORD,
    ]
    assert phases == sorted(phases, key=list(Phase).index)  # one phase after another
    assert [done for phase, done, _ in calls if phase is Phase.MATCH] == [1, 2, 3, 3]
    last = {phase: (done, total) for phase, done, total in calls}
    assert last == {
        Phase.DOWNLOAD: (1, 1),
        Phase.MATCH: (3, 3),
        Phase.RECORD: (3, 3),
    }


def test_the_command_line_shows_a_progress_bar_for_each_phase(
    live_app, shopper, session, trading_day
):
    _pay(live_app, shopper)
    live_app.sandbox.outbox.deliver_due()
    _after_bills_are_ready(live_app, trading_day)
    runner = live_app.app.test_cli_runner()
    day = trading_day.isoformat()

    result = in_app(
        live_app,
        lambda: runner.invoke(
            args=[
                "reconcile",
                "run",
                "--date",
                day,
                "--channel",
                "wechat",
                "--progress",
            ]
        ),
    )

    assert result.exit_code == 0, result.output
    # Off a terminal, click prints each bar's label once instead of drawing it.
    for phase in ("download", "match", "record"):
        assert f"wechat {day} {phase}" in result.output
    assert f"wechat {day}: finished, 1 lines;" in result.output
