"""The nightly run: yesterday, and any recent day whose run did not finish, each
settled once every channel has finished it."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

from sqlalchemy import select

from payments import ledger
from payments.wallet import pay_from_wallet
from reconciliation.models import ReconciliationRun, RunState
from reconciliation.settlement import MerchantStatement

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A week no other test trades in: the sandbox's bills are shared by the session,
# and a day without trade has no bill, which a run after 10:00 finishes empty.
TODAY = dt.date(2035, 7, 10)


def _day(days_ago: int) -> dt.date:
    return TODAY - dt.timedelta(days=days_ago)


def _run_row(channel: str, days_ago: int, state: RunState) -> ReconciliationRun:
    return ReconciliationRun(
        channel=channel, day=_day(days_ago), state=state, attempts=1, counts="{}"
    )


def _runs(session) -> dict[tuple[str, dt.date], tuple[str, int]]:
    session.rollback()
    return {
        (run.channel, run.day): (run.state.value, run.attempts)
        for run in session.scalars(select(ReconciliationRun))
    }


def _nightly(live_app):
    runner = live_app.app.test_cli_runner()

    def run():
        with live_app.app.app_context():
            return runner.invoke(args=["reconcile", "nightly"])

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def test_a_failed_or_missed_night_is_reconciled_and_settled_by_the_next_one(
    live_app, session, make_card, merchant
):
    session.add_all(
        [
            _run_row("wechat", 5, RunState.FAILED),  # beyond the 3 days looked back
            _run_row("wechat", 3, RunState.FAILED),
            _run_row("alipay", 3, RunState.FINISHED),
            _run_row("wechat", 2, RunState.FINISHED),
            _run_row("alipay", 2, RunState.FINISHED),
        ]
    )
    # Day -2 is finished; day -1 (yesterday) and day -3 are not, and the failed
    # day -3 had a merchant's takings that were never settled.
    card = make_card(balance_fen=5000)
    pay_from_wallet(session, card.number, merchant, 1250, idempotency_ref="missed")
    session.execute(
        ledger.JournalEntry.__table__.update()
        .where(ledger.JournalEntry.kind == ledger.EntryKind.PAYMENT)
        .values(created_at=dt.datetime.combine(_day(3), dt.time(12), SHANGHAI))
    )
    session.commit()
    live_app.sandbox.clock.set(dt.datetime.combine(TODAY, dt.time(10, 35), SHANGHAI))

    result = _nightly(live_app)

    assert result.exit_code == 0, result.output
    runs = _runs(session)
    assert runs[("wechat", _day(3))] == ("finished", 2)
    assert runs[("alipay", _day(3))] == ("finished", 1)
    assert runs[("wechat", _day(1))][0] == runs[("alipay", _day(1))][0] == "finished"
    assert runs[("wechat", _day(2))] == ("finished", 1)  # not run again
    assert runs[("wechat", _day(5))] == ("failed", 1)  # too old to catch up
    assert ("wechat", _day(4)) not in runs
    statement = session.scalars(select(MerchantStatement)).one()
    assert (statement.day, statement.gross_fen) == (_day(3), 1250)
    assert statement.entry_id is not None


def test_a_night_with_every_recent_day_finished_reconciles_only_yesterday(
    live_app, session
):
    session.add_all(
        [
            _run_row(c, n, RunState.FINISHED)
            for c in ("wechat", "alipay")
            for n in (2, 3)
        ]
    )
    session.commit()
    live_app.sandbox.clock.set(dt.datetime.combine(TODAY, dt.time(10, 35), SHANGHAI))

    result = _nightly(live_app)

    assert result.exit_code == 0, result.output
    ran = {day for (_, day), (_, attempts) in _runs(session).items() if attempts}
    assert ran == {_day(1), _day(2), _day(3)}
    assert f"wechat {_day(1)}: finished" in result.output
    assert str(_day(2)) not in result.output and str(_day(3)) not in result.output


def test_a_finished_day_whose_settlement_failed_is_settled_by_the_next_night(
    live_app, session, make_card, merchant
):
    # Both channels finished day -2, but its settlement never committed.
    session.add_all([_run_row(c, 2, RunState.FINISHED) for c in ("wechat", "alipay")])
    card = make_card(balance_fen=5000)
    pay_from_wallet(session, card.number, merchant, 800, idempotency_ref="unsettled")
    session.execute(
        ledger.JournalEntry.__table__.update()
        .where(ledger.JournalEntry.kind == ledger.EntryKind.PAYMENT)
        .values(created_at=dt.datetime.combine(_day(2), dt.time(12), SHANGHAI))
    )
    session.commit()
    live_app.sandbox.clock.set(dt.datetime.combine(TODAY, dt.time(10, 35), SHANGHAI))

    first = _nightly(live_app)
    second = _nightly(live_app)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    session.rollback()
    (statement,) = session.scalars(select(MerchantStatement))
    assert (statement.day, statement.paid_fen) == (_day(2), 800)
    assert _runs(session)[("wechat", _day(2))] == ("finished", 1)
