"""The issue's "done when": after a day of demo traffic through the sandbox with
faults switched on, the nightly command puts each planted problem under its kind,
repairs the lost notification, and writes statements that equal the ledger."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from sqlalchemy import select

from payments import ledger
from payments.pos.models import PaymentState, PosPayment
from payments.topups import TopUpState, find_top_up
from reconciliation.models import Discrepancy
from reconciliation.settlement import MerchantStatement

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A day no other test trades on: the sandbox's bills are shared by the session.
DEMO_DAY = dt.date(2034, 3, 3)
PLANTED = re.compile(r"^\s+(wechat|alipay)\s+(\S+)\s+.+→ (\w+) \((\w+)\)$", re.M)


def test_a_demo_day_puts_each_planted_problem_under_its_kind(live_app, session):
    runner = live_app.app.test_cli_runner()
    assert runner.invoke(args=["demo", "seed", "--students", "10"]).exit_code == 0

    played = runner.invoke(
        args=[
            "demo",
            "traffic",
            "--date",
            DEMO_DAY.isoformat(),
            "--top-ups",
            "4",
            "--payments",
            "6",
        ]
    )
    assert played.exit_code == 0, played.output
    planted = {
        key: (kind, status) for _, key, kind, status in PLANTED.findall(played.output)
    }
    live_app.sandbox.clock.set(
        dt.datetime.combine(DEMO_DAY + dt.timedelta(days=1), dt.time(10, 35), SHANGHAI)
    )
    nightly = runner.invoke(
        args=["reconcile", "nightly", "--date", DEMO_DAY.isoformat()]
    )

    assert nightly.exit_code == 0, nightly.output
    session.rollback()
    found = {
        item.key: (item.kind, item.status.value)
        for item in session.scalars(
            select(Discrepancy).where(Discrepancy.day == DEMO_DAY)
        )
    }
    assert found == planted
    assert sorted(kind for kind, _ in planted.values()) == [
        "amount_mismatch",
        "channel_only",
        "ours_only",
    ]
    lost = next(key for key, (kind, _) in planted.items() if kind == "channel_only")
    assert find_top_up(session, lost).state is TopUpState.SUCCEEDED
    statements = session.scalars(
        select(MerchantStatement).where(MerchantStatement.day == DEMO_DAY)
    ).all()
    paid = session.scalars(
        select(PosPayment).where(PosPayment.state == PaymentState.SUCCEEDED)
    ).all()
    assert sum(s.gross_fen for s in statements) == sum(p.amount_fen for p in paid)
    assert sum(s.refunds_fen for s in statements) == 300
    assert all(
        s.net_fen == s.gross_fen - s.refunds_fen - s.fees_fen for s in statements
    )
    assert ledger.check_ledger(session) == []
