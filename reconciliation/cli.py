"""``flask reconcile run --date D [--channel …]`` and ``flask reconcile nightly``.

A cron line or systemd timer for deployments with ``CAMPUS_SCHEDULER=off``
(WeChat Pay's bill for a day is ready from 10:00 the next morning)::

    35 10 * * *  cd /srv/campus && .venv/bin/flask reconcile nightly

    # /etc/systemd/system/campus-reconcile.timer
    [Timer]
    OnCalendar=*-*-* 10:35:00 Asia/Shanghai
    Persistent=true
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import TYPE_CHECKING

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from campus import clock
from campus.cli import reaches_channels
from reconciliation.run import (
    Phase,
    ReconciliationError,
    days_to_run,
    reconcile_day,
)

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

logger = logging.getLogger(__name__)

reconcile_cli = AppGroup("reconcile", help="Reconcile against the channels' bills.")

CHANNELS = ("wechat", "alipay")


class _Bars:
    """A progress bar on the terminal for each phase of one channel's run."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.phase: Phase | None = None
        self.bar: ProgressBar[int] | None = None

    def __call__(self, phase: Phase, done: int, total: int) -> None:
        if phase is not self.phase:
            self.close()
            self.phase = phase
            self.bar = click.progressbar(
                length=max(total, 1), label=f"{self.label} {phase}", file=sys.stderr
            )
            self.bar.__enter__()
        assert self.bar is not None
        # An estimated total may turn out short; the bar never runs backwards.
        self.bar.length = max(total, done, 1)
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _run(
    day: dt.date,
    channels: tuple[str, ...],
    hold_days: int | None = None,
    progress: bool | None = None,
) -> bool:
    """Reconcile ``day`` for each channel and say how each went. Progress bars
    are drawn when ``progress`` is set, or by default when stderr is a terminal."""
    if progress is None:
        progress = sys.stderr.isatty()
    ok = True
    for channel in channels:
        bars = _Bars(f"{channel} {day}") if progress else None
        try:
            run = reconcile_day(channel, day, hold_days=hold_days, progress=bars)
        except ReconciliationError as error:
            click.echo(f"{channel} {day}: {type(error).__name__}: {error}", err=True)
            ok = False
            continue
        finally:
            if bars is not None:
                bars.close()
        kinds = ", ".join(
            f"{kind} {count}" for kind, count in sorted(run.counts.items())
        )
        click.echo(f"{channel} {day}: {run.state.value}, {run.lines} lines; {kinds}")
    return ok


@reconcile_cli.command("run")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]))
@click.option("--channel", type=click.Choice(CHANNELS), default=None)
@click.option(
    "--hold-days",
    type=click.IntRange(min=0),
    default=None,
    help="Days an ours-only order waits for a later bill "
    "(default: CAMPUS_RECONCILE_HOLD_DAYS).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Draw progress bars (default: when stderr is a terminal).",
)
@reaches_channels
def run_command(
    day: dt.datetime, channel: str | None, hold_days: int | None, progress: bool | None
) -> None:
    """Reconcile one business day (yyyy-mm-dd), one channel or both."""
    channels = (channel,) if channel else CHANNELS
    if not _run(day.date(), channels, hold_days, progress):
        sys.exit(1)


def _settle(day: dt.date, *, quiet: bool = False) -> None:
    from campus.database import db
    from reconciliation.run import day_bounds
    from reconciliation.settlement import settle_merchants

    settings = current_app.extensions["campus.settings"]
    start, end = day_bounds(day, settings.zone)
    with db.transaction() as session:
        statements = settle_merchants(session, day, start, end)
        for statement in [] if quiet else statements:
            click.echo(
                f"{statement.merchant} {day}: gross {statement.gross_fen}, refunds "
                f"{statement.refunds_fen}, fees {statement.fees_fen}, net "
                f"{statement.net_fen} fen"
            )


@reconcile_cli.command("settle")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]))
def settle_command(day: dt.datetime) -> None:
    """Write every merchant's statement for a day and pay it out (once)."""
    _settle(day.date())


def nightly(day: dt.date | None = None) -> bool:
    """Reconcile yesterday (or ``day``) for every channel, and any of the last
    ``reconcile_hold_days`` days whose run did not finish; settle the merchants of
    each day once every channel has finished it."""
    settings = current_app.extensions["campus.settings"]
    # The service clock: the sandbox's movable one in the embedded default.
    today = clock.now().astimezone(settings.zone).date()
    if day is not None:
        window, to_run = [day], {day}
    else:
        look_back = max(settings.reconcile_hold_days, 1)
        window = [today - dt.timedelta(days=n) for n in range(look_back, 0, -1)]
        to_run = set(days_to_run(today, look_back=look_back, channels=CHANNELS))
    ok = True
    for each in window:
        if each in to_run and not _run(each, CHANNELS):
            ok = False
            continue
        # A finished day is settled again too: settling changes nothing where the
        # statements exist, and finishes a night whose settlement failed.
        try:
            _settle(each, quiet=each not in to_run)
        except Exception:  # one day's failure must not stop the others
            logger.exception("settlement_failed", extra={"day": each.isoformat()})
            ok = False
    return ok


@reconcile_cli.command("nightly")
@click.option(
    "--date",
    "day",
    default=None,
    type=click.DateTime(["%Y-%m-%d"]),
    help="Reconcile and settle this day only (default: yesterday, and any of the "
    "last CAMPUS_RECONCILE_HOLD_DAYS days that did not finish).",
)
@reaches_channels
def nightly_command(day: dt.datetime | None) -> None:
    """Reconcile yesterday (Asia/Shanghai) and unfinished recent days, then settle."""
    if not nightly(day.date() if day else None):
        sys.exit(1)


def init_app(app: Flask) -> None:
    from campus.scheduler import Job, register_job

    app.cli.add_command(reconcile_cli)
    register_job(app, Job("reconcile_nightly", nightly, cron="35 10 * * *"))
