"""One channel's day: download, keep, check, parse, match, repair, record.

``reconcile_day`` is safe to run again and again. A day already finished is left
alone. A day whose run died half way is finished by the next run: every
discrepancy is recorded under a unique (channel, day, kind, key), and every repair
settles through the order's own settle function, which posts at most once. Two runs
of one day at once: the second is refused while the first holds the day's lease.

Errors::

    ReconciliationError
    ├── RunInProgress     another run holds this day
    ├── BillUnavailable   the channel has no bill yet, or did not answer
    └── BillRejected      the bill is malformed, truncated, or its totals disagree
                          with its own summary: nothing is changed
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import gc
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from flask import current_app
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campus import clock
from campus.database import db, utcnow
from campus.settings import Settings
from payments import ledger, orders
from payments.channel_log import recorded_call
from payments.channels import channel_for
from payments.channels.base import (
    Bill,
    ChannelError,
    ChannelRejected,
    PaymentResult,
    RefundResult,
    RefundState,
    TradeState,
)
from payments.channels.wechat.channel import DamagedBill
from payments.orders import OrderRecord, RefundRecord, SettleOutcome
from reconciliation.bills.alipay import MalformedBill, parse_alipay_bill
from reconciliation.bills.columns import TradeColumns, read_trade_columns
from reconciliation.bills.kept import keep_bill
from reconciliation.bills.wechat import BillFormatError
from reconciliation.lines import (
    BillLine,
    alipay_lines,
    wechat_bill_lines,
)
from reconciliation.matching import (
    DayMatch,
    DayOrder,
    DayOrderColumns,
    Finding,
    FindingKind,
    merchant_fee,
)
from reconciliation.models import (
    Discrepancy,
    DiscrepancyStatus,
    ReconciliationRun,
    RunState,
)
from reconciliation.settlement import record_fees

logger = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=30)
BILL_READY_AFTER = dt.timedelta(hours=10)
"""WeChat Pay's bill of a day is ready from 10:00 the next morning."""
NO_BILL_CODES = {"NO_STATEMENT_EXIST", "isp.bill_not_exist"}
"""What the channels answer for a day without any trade."""


class Phase(enum.StrEnum):
    """The steps of a run that report progress, in order."""

    DOWNLOAD = "download"
    """Fetching the bill from the channel (one step)."""

    MATCH = "match"
    """Parsing the bill and matching its lines, in one pass: done counts lines."""

    RECORD = "record"
    """Recording the findings in committed batches, repairs included."""


Progress = Callable[[Phase, int, int], None]
"""``progress(phase, done, total)``; ``total`` may be an estimate, or 0 when it
is not known yet."""

PROGRESS_EVERY = 10_000
"""Lines matched between two reports of progress."""
READ_BY_COLUMN_BYTES = 1 << 20
"""A WeChat bill this big (about 4,000 lines) or bigger is read into columns
(``bills.columns``) by a thread while the day's orders load, and matched against
them by column; a smaller one is read and matched line by line as fast."""


class ReconciliationError(Exception):
    def __init__(self, message: str, *, channel: str, day: dt.date) -> None:
        super().__init__(f"{channel} {day}: {message}")
        self.channel = channel
        self.day = day


class RunInProgress(ReconciliationError):
    pass


class BillUnavailable(ReconciliationError):
    pass


class BillRejected(ReconciliationError):
    pass


@dataclasses.dataclass(frozen=True)
class RunReport:
    """A run as it ended, readable after its session is gone."""

    id: int
    channel: str
    day: dt.date
    state: RunState
    attempts: int
    lines: int
    counts: dict[str, int]
    error: str | None

    @classmethod
    def of(cls, run: ReconciliationRun) -> RunReport:
        return cls(
            id=run.id,
            channel=run.channel,
            day=run.day,
            state=run.state,
            attempts=run.attempts,
            lines=run.lines,
            counts=json.loads(run.counts) if run.counts else {},
            error=run.error,
        )


def fee_rate(settings: Settings, channel: str) -> int:
    """The channel's contract fee rate in hundredths of a percent (60 is 0.6 %)."""
    rates = {
        "wechat": settings.reconcile_fee_rate_wechat,
        "alipay": settings.reconcile_fee_rate_alipay,
    }
    return rates.get(channel, 0)


def day_bounds(day: dt.date, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    return start, start + dt.timedelta(days=1)


def reconcile_day(
    channel: str,
    day: dt.date,
    *,
    hold_days: int | None = None,
    progress: Progress | None = None,
    batch: int = 1000,
    now: dt.datetime | None = None,
    bill: Bill | None = None,
) -> RunReport:
    """Reconcile ``channel``'s bill for ``day`` (a business day in the settings'
    time zone) against our orders. Returns the finished run; raises for a run that
    could not finish (and records why). ``hold_days`` defaults to the
    ``reconcile_hold_days`` setting. ``progress(phase, done, total)`` is called as
    the bill is downloaded, every ``PROGRESS_EVERY`` lines matched, and after each
    committed batch of ``batch`` findings. ``bill`` is the day's bill when the
    caller already has it (downloaded earlier, or kept from another run); without
    it the run downloads it through the channel adapter."""
    with _collector_paused():
        return _reconcile_day(channel, day, hold_days, progress, batch, now, bill)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A run keeps a million tuples alive (the day's orders) and makes as many
    short-lived ones; none forms a cycle, yet the collector would scan the live
    ones again and again as they pile up, and the whole application's objects
    with them (seconds of a night's run). Reference counting frees everything
    here; the collector is on again for whatever runs after, whatever happens."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _reconcile_day(
    channel: str,
    day: dt.date,
    hold_days: int | None,
    progress: Progress | None,
    batch: int,
    now: dt.datetime | None,
    bill: Bill | None,
) -> RunReport:
    settings = current_app.extensions["campus.settings"]
    if hold_days is None:
        hold_days = settings.reconcile_hold_days
    now = now or clock.now()
    run = _claim(channel, day, now)
    if run.state is RunState.FINISHED:
        logger.info(
            "reconciliation_already_done", extra={"channel": channel, "day": str(day)}
        )
        return run
    start, end = day_bounds(day, settings.zone)
    report = progress or _no_progress
    try:
        # The checksum and the kept copy of the file (a quarter of a GiB on a busy
        # day) are hashlib's and the disk's work, and reading a big bill into
        # columns is Arrow's, all done without the interpreter lock: threads do
        # them while our orders are read. No line of the bill is used before it
        # has been checked against its checksum, and nothing is recorded before
        # it has been kept.
        with ThreadPoolExecutor(2, thread_name_prefix="bill") as pool:
            report(Phase.DOWNLOAD, 0, 1)
            given = bill is not None
            if bill is None:
                bill = _download(channel, day, ready=now >= end + BILL_READY_AFTER)
            elif bill.channel != channel or bill.day != day:
                raise BillRejected(
                    f"given the {bill.channel} bill of {bill.day}",
                    channel=channel,
                    day=day,
                )
            # The bill is read and matched in one pass, in memory; nothing is
            # written until its last line and its summary have been checked.
            kept: Future[Path] | None = None
            checked: Future[None] = Future()
            columns: Future[TradeColumns | None] | None = None
            if bill is not None:
                instance = Path(current_app.instance_path)
                kept = pool.submit(
                    _check_and_keep, bill, instance, check=given, checked=checked
                )
                if channel == "wechat" and len(bill.content) >= READ_BY_COLUMN_BYTES:
                    columns = pool.submit(read_trade_columns, bill.content)
            else:
                report(Phase.DOWNLOAD, 1, 1)

            def lines(matcher: DayMatch) -> Iterable[BillLine | int]:
                if bill is None or kept is None:
                    return ()
                read = _once_checked(
                    checked,
                    kept,
                    _lines(bill, channel, day, matcher, columns),
                    report,
                )
                if progress is not None:
                    read = _reporting(read, _line_estimate(bill), progress)
                return read

            matched = _match(
                channel,
                day,
                lines,
                start,
                end,
                fee_rate(settings, channel),
            )
            path = kept.result() if kept is not None else None
            report(Phase.MATCH, matched.lines, matched.lines)
    except ReconciliationError as error:
        _fail(run.id, str(error))
        raise
    except Exception as error:
        # Not the bill's fault nor the channel's (a full disk keeping the file,
        # a lost database): the run says so at once rather than holding the day
        # until its lease runs out.
        _fail(run.id, f"{type(error).__name__}: {error}")
        raise
    try:
        _record_all(channel, day, matched, start, hold_days, report, batch)
        # Releasing holds, booking fees, counting and finishing commit together: a
        # run killed before this point leaves them all to the next one, which then
        # counts exactly what an uninterrupted run would have.
        with db.transaction() as session:
            released = _release_expired_holds(session, channel, day)
            fees_fen = _book_fees(session, channel, day, matched)
            counts = _recount(
                session, channel, day, matched.matched, released, fees_fen
            )
            run = session.get_one(ReconciliationRun, run.id)
            run.state = RunState.FINISHED
            run.finished_at = utcnow()
            run.locked_until = None
            run.bill_sha256 = bill.sha256 if bill else None
            run.bill_path = str(path) if path else None
            run.lines = matched.lines
            run.counts = json.dumps(counts, ensure_ascii=False, sort_keys=True)
            run.error = None
            report = RunReport.of(run)
    except Exception as error:
        # What was committed stays (the next run skips it); the day is free for
        # that run at once.
        _fail(run.id, f"{type(error).__name__}: {error}")
        raise
    logger.info(
        "reconciliation_finished",
        extra={"channel": channel, "day": str(day), **counts},
    )
    return report


def _claim(channel: str, day: dt.date, now: dt.datetime) -> RunReport:
    with db.transaction() as session:
        run = session.scalar(
            select(ReconciliationRun).where(
                ReconciliationRun.channel == channel, ReconciliationRun.day == day
            )
        )
        if run is None:
            try:
                with session.begin_nested():
                    session.add(
                        ReconciliationRun(
                            channel=channel, day=day, state=RunState.FAILED, attempts=0
                        )
                    )
                    session.flush()
            except IntegrityError:
                pass
        if run is not None and run.state is RunState.FINISHED:
            return RunReport.of(run)
        # Conditional, so that of two runs starting at once exactly one wins.
        claimed = session.scalar(
            update(ReconciliationRun)
            .where(
                ReconciliationRun.channel == channel,
                ReconciliationRun.day == day,
                ReconciliationRun.state != RunState.FINISHED,
                (ReconciliationRun.locked_until.is_(None))
                | (ReconciliationRun.locked_until < now),
            )
            .values(
                state=RunState.RUNNING,
                locked_until=now + LEASE,
                started_at=now,
                attempts=ReconciliationRun.attempts + 1,
            )
            .returning(ReconciliationRun.id)
        )
        if claimed is None:
            current = session.scalars(
                select(ReconciliationRun).where(
                    ReconciliationRun.channel == channel, ReconciliationRun.day == day
                )
            ).one()
            if current.state is RunState.FINISHED:
                return RunReport.of(current)
            raise RunInProgress("another run holds this day", channel=channel, day=day)
        return RunReport.of(session.get_one(ReconciliationRun, claimed))


def _fail(run_id: int, error: str) -> None:
    with db.transaction() as session:
        run = session.get_one(ReconciliationRun, run_id)
        run.state = RunState.FAILED
        run.error = error[:2000]
        run.locked_until = None
    logger.warning("reconciliation_failed", extra={"run": run_id, "error": error})


def _download(channel: str, day: dt.date, *, ready: bool) -> Bill | None:
    """The day's bill, or None when the channel says there is none because
    nothing was traded (after the hour its bills are ready: before it, the same
    answer only means "not yet")."""
    try:
        with recorded_call(channel, "download_bill", None, {"day": str(day)}) as call:
            bill = channel_for(channel).download_bill(day)
            call.response = {
                "filename": bill.filename,
                "sha256": bill.sha256,
                "bytes": len(bill.content),
            }
    except DamagedBill as error:
        raise BillRejected(
            f"the bill does not match its hash_value (truncated or corrupted): {error}",
            channel=channel,
            day=day,
        ) from error
    except ChannelRejected as error:
        if ready and error.error_code in NO_BILL_CODES:
            logger.info(
                "reconciliation_no_bill", extra={"channel": channel, "day": str(day)}
            )
            return None
        raise BillUnavailable(str(error), channel=channel, day=day) from error
    except ChannelError as error:
        raise BillUnavailable(str(error), channel=channel, day=day) from error
    return bill


def _check_and_keep(
    bill: Bill, instance: Path, *, check: bool, checked: Future[None]
) -> Path:
    """Keep the bill, first checking it against its sha256 when ``check``; the
    check's outcome goes to ``checked`` as soon as it is known, before the file
    is written."""
    try:
        if check and hashlib.sha256(bill.content).hexdigest() != bill.sha256:
            # The checksum is what the run records and the kept file is named by.
            raise BillRejected(
                "the bill given does not match its sha256",
                channel=bill.channel,
                day=bill.day,
            )
    except BaseException as error:
        checked.set_exception(error)
        raise
    checked.set_result(None)
    return keep_bill(bill, instance)


def _once_checked(
    checked: Future[None],
    kept: Future[Path],
    lines: Iterable[BillLine | int],
    report: Progress,
) -> Iterator[BillLine | int]:
    """``lines``, not one before the bill has been checked against its sha256
    (``BillRejected`` otherwise). Writing the kept copy goes on meanwhile; the
    run waits for it before it records anything."""
    wait([checked, kept], return_when=FIRST_COMPLETED)
    if kept.done() and not checked.done():
        kept.result()  # failed before it could check: its error
    checked.result()
    report(Phase.DOWNLOAD, 1, 1)
    yield from lines


def _lines(
    bill: Bill,
    channel: str,
    day: dt.date,
    matcher: DayMatch,
    columns: Future[TradeColumns | None] | None = None,
) -> Iterator[BillLine | int]:
    """The bill's lines one at a time, for ``matcher.add``; where ``matcher``
    took lines as they were read, how many instead. A WeChat bill being read into
    ``columns`` is matched by column, unless it was not in WeChat Pay's layout.
    ``BillRejected`` (at the latest after the last line) when the bill is
    malformed or disagrees with its own summary."""
    try:
        if channel == "wechat":
            read = columns.result() if columns is not None else None
            if read is not None:
                yield from matcher.take_columns(read)
            else:
                yield from wechat_bill_lines(bill.content, matcher.take_paid)
            return
        parsed = parse_alipay_bill(bill.content)
        if parsed.day != day:
            raise MalformedBill(f"the bill's files are of {parsed.day}, not {day}")
        if not parsed.totals_match_summary():
            raise MalformedBill("the lines do not add up to the summary")
        yield from alipay_lines(parsed)
    except (BillFormatError, MalformedBill) as error:
        raise BillRejected(str(error), channel=channel, day=day) from error


def _no_progress(phase: Phase, done: int, total: int) -> None:
    pass


def _line_estimate(bill: Bill) -> int:
    """About how many lines a bill has, for a progress bar: a WeChat bill's rows
    are its text's lines (give or take its header and summary); an Alipay zip's
    are not known before it is parsed."""
    return bill.content.count(b"\n") if bill.channel == "wechat" else 0


def _reporting(
    lines: Iterable[BillLine | int], estimate: int, progress: Progress
) -> Iterator[BillLine | int]:
    done, next_report = 0, PROGRESS_EVERY
    for line in lines:
        # A number stands for that many lines taken.
        done += line if type(line) is int else 1
        if done >= next_report:
            progress(Phase.MATCH, done, max(estimate, done))
            next_report = (done // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        yield line


def _ours(
    session: Session, channel: str, start: dt.datetime, end: dt.datetime
) -> tuple[dict[str, OrderRecord | DayOrder], DayOrderColumns, dict[str, RefundRecord]]:
    """The orders we settled on the day: by column where their kind gives them
    as plain rows (``paid_select``, a million on a busy day), else by number; and
    the refunds we made, by number."""
    day_columns = DayOrderColumns()
    paid: dict[str, OrderRecord | DayOrder] = {}
    for kind in orders.order_kinds():
        if kind.paid_select is not None:
            statement = kind.paid_select(channel, start, end)
            for rows in orders.driver_rows(session, statement):
                day_columns.add(rows, kind.name, channel)
        elif kind.paid_between is not None:
            for record in kind.paid_between(session, channel, start, end):
                paid[record.out_trade_no] = record
    refunded = {
        record.out_refund_no: record
        for kind in orders.refund_kinds()
        if kind.refunded_between is not None
        for record in kind.refunded_between(session, channel, start, end)
    }
    return paid, day_columns, refunded


def _lookup_order(session: Session) -> Callable[[str], OrderRecord | None]:
    def lookup(out_trade_no: str) -> OrderRecord | None:
        for kind in orders.order_kinds():
            if kind.record is not None and (
                record := kind.record(session, out_trade_no)
            ):
                return record
        return None

    return lookup


def _lookup_refund(session: Session) -> Callable[[str], RefundRecord | None]:
    def lookup(out_refund_no: str) -> RefundRecord | None:
        for kind in orders.refund_kinds():
            if kind.record is not None and (
                record := kind.record(session, out_refund_no)
            ):
                return record
        return None

    return lookup


@dataclasses.dataclass
class _Matched:
    """A day matched in memory, before anything is recorded."""

    lines: int
    matched: int
    findings: list[Finding]
    """Everything but the matches of the day's own orders, which are only
    counted."""
    fee_fen: int
    merchant_fees: list[tuple[str, str, int]]


def _match(
    channel: str,
    day: dt.date,
    lines: Callable[[DayMatch], Iterable[BillLine | int]],
    start: dt.datetime,
    end: dt.datetime,
    fee_rate_per_10000: int,
) -> _Matched:
    """Match the bill's ``lines(matcher)``, which may count lines that match
    one of the day's own orders as they are read (``matcher.take_paid``), or all
    at once (``matcher.take_columns``)."""
    session = db.session()
    try:
        paid, day_columns, refunded = _ours(session, channel, start, end)
        # What an interrupted run of this day repaired is now paid (or refunded)
        # and would match; it is matched as it stood before, so the day sorts as
        # it first did.
        before, refunds_before = _as_before_repair(session, channel, day)
        for out_trade_no, record in before.items():
            if out_trade_no in paid:
                paid[out_trade_no] = record
        for out_trade_no in day_columns.drop(before):
            paid[out_trade_no] = before[out_trade_no]
        for out_refund_no, refund in refunds_before.items():
            if out_refund_no in refunded:
                refunded[out_refund_no] = refund
        matcher = DayMatch(
            paid, refunded, fee_rate_per_10000, day_columns, window=(start, end)
        )
        del day_columns
        add = matcher.add
        for line in lines(matcher):
            # A number counts lines taken, already counted by the matcher.
            if type(line) is not int:
                add(line)
        del paid, refunded
        lookup, lookup_refund = _lookup_order(session), _lookup_refund(session)
        # Only now, the bill being whole: the lines of orders not paid that day.
        findings = matcher.finish(
            lambda number: before.get(number) or lookup(number),
            lambda number: refunds_before.get(number) or lookup_refund(number),
        )
    finally:
        session.rollback()
    return _Matched(
        matcher.lines,
        matcher.matched,
        findings,
        matcher.fee_fen,
        matcher.merchant_fees,
    )


def _as_before_repair(
    session: Session, channel: str, day: dt.date
) -> tuple[dict[str, OrderRecord], dict[str, RefundRecord]]:
    """The orders and refunds this day's runs have repaired, as they were found
    (unpaid, or refund processing), by our order and refund numbers."""
    repaired = session.scalars(
        select(Discrepancy).where(
            Discrepancy.channel == channel,
            Discrepancy.day == day,
            Discrepancy.status == DiscrepancyStatus.REPAIRED,
        )
    ).all()
    payments = {
        item.out_trade_no: OrderRecord(
            kind=item.order_kind or "",
            out_trade_no=item.out_trade_no,
            channel=channel,
            state=item.our_state or "unpaid",
            amount_fen=item.our_amount_fen or 0,
            transaction_id=None,
            paid_at=None,
            merchant=item.merchant,
        )
        for item in repaired
        if item.kind == FindingKind.CHANNEL_ONLY.value and item.out_trade_no
    }
    refunds = {
        item.out_refund_no: RefundRecord(
            kind=item.order_kind or "",
            out_refund_no=item.out_refund_no,
            out_trade_no=item.out_trade_no or "",
            channel=channel,
            state=item.our_state or "processing",
            amount_fen=item.our_amount_fen or 0,
            refund_id=None,
            refunded_at=None,
            merchant=item.merchant,
        )
        for item in repaired
        if item.kind == FindingKind.REFUND_MISMATCH.value and item.out_refund_no
    }
    return payments, refunds


def _record_all(
    channel: str,
    day: dt.date,
    matched: _Matched,
    start: dt.datetime,
    hold_days: int,
    progress: Progress,
    batch: int,
) -> None:
    """Record the findings in committed batches of ``batch``, skipping those an
    earlier, interrupted run of the day recorded already."""
    findings = matched.findings
    with db.transaction() as session:
        # One query, not one per finding (a first run finds nothing and inserts
        # every row at once).
        known = {
            (kind, key)
            for kind, key in session.execute(
                select(Discrepancy.kind, Discrepancy.key).where(
                    Discrepancy.channel == channel, Discrepancy.day == day
                )
            )
        }
    total = matched.matched + len(findings)
    for offset in range(0, len(findings), batch):
        with db.transaction() as session:
            rows: list[dict[str, object]] = []
            for finding in findings[offset : offset + batch]:
                _record(session, channel, day, finding, start, hold_days, known, rows)
            if rows:
                session.execute(insert(Discrepancy), rows)
        done = matched.matched + min(offset + batch, len(findings))
        progress(Phase.RECORD, done, total)
    if not findings:
        progress(Phase.RECORD, total, total)


def _recount(
    session: Session,
    channel: str,
    day: dt.date,
    matched: int,
    released: int,
    fees_fen: int,
) -> dict[str, int]:
    """The run's counts, read back from the rows it stored rather than counted as
    it went: what a re-run skips as already recorded is counted all the same."""
    counts: Counter[str] = Counter()
    if matched:
        counts[FindingKind.MATCHED.value] = matched
    held = Discrepancy.hold_until.is_not(None)
    rows = session.execute(
        select(Discrepancy.kind, Discrepancy.status, held, func.count())
        .where(Discrepancy.channel == channel, Discrepancy.day == day)
        .group_by(Discrepancy.kind, Discrepancy.status, held)
    )
    for kind, status, was_held, number in rows:
        counts[kind] += number
        if status is DiscrepancyStatus.REPAIRED:
            counts["repaired"] += number
        if was_held:
            counts["held"] += number
    late = session.scalar(
        select(func.count()).where(
            Discrepancy.channel == channel, Discrepancy.matched_on == day
        )
    )
    if late:
        counts["matched_late"] = late
    counts["released"] = released
    counts["fees_fen"] = fees_fen
    return dict(counts)


def _book_fees(session: Session, channel: str, day: dt.date, matched: _Matched) -> int:
    """Book the day's fees as the bill states them (the channel kept them out of
    what it pays us), and remember each merchant payment's fee for settlement."""
    total = matched.fee_fen
    if total:
        fees, clearing = (
            ledger.fees_account(session, channel),
            ledger.clearing_account(session, channel),
        )
        # A day of more refunds than payments nets fees given back: the channel
        # pays them into clearing, the other way round.
        source, destination = (fees, clearing) if total > 0 else (clearing, fees)
        ledger.transfer(
            session,
            kind=ledger.EntryKind.FEE,
            idempotency_ref=f"fees:{channel}:{day.isoformat()}",
            source=source,
            destination=destination,
            amount_fen=abs(total),
            memo=f"{channel} fees of {day.isoformat()}"
            + ("" if total > 0 else " (given back on refunds)"),
            created_by="reconciliation",
        )
    record_fees(session, channel, day, matched.merchant_fees)
    return total


def _record(
    session: Session,
    channel: str,
    day: dt.date,
    finding: Finding,
    start: dt.datetime,
    hold_days: int,
    known: set[tuple[str, str]],
    rows: list[dict[str, object]],
) -> None:
    """Record one finding as a row to insert into ``rows``, unless ``known`` has
    it; a match of an order paid on an earlier day closes what was held for it."""
    if finding.kind is FindingKind.MATCHED:
        ours = finding.ours
        if ours is None:
            return
        at = ours.refunded_at if isinstance(ours, RefundRecord) else ours.paid_at
        if at is None or at >= start:
            return
        reversed_by = _close_held(session, channel, day, ours, at)
        if reversed_by is None:
            return
        # Finance trusted the channel's silence and reversed our booking, and now
        # the channel lists the payment: the money is at the channel, not in our
        # books, and finance must see it again.
        finding = Finding(
            FindingKind.CHANNEL_ONLY
            if isinstance(ours, OrderRecord)
            else FindingKind.REFUND_MISMATCH,
            finding.key,
            finding.line,
            ours,
            note=f"listed on {day} after finance reversed it "
            f"(discrepancy {reversed_by.id}: {reversed_by.reason or ''})",
        )
    identity = (finding.kind.value, finding.key[:64])
    if identity in known:
        return
    known.add(identity)

    line, ours = finding.line, finding.ours
    discrepancy: dict[str, object] = {
        "channel": channel,
        "day": day,
        "kind": finding.kind.value,
        "key": finding.key[:64],
        "status": DiscrepancyStatus.OPEN,
        "repairable": finding.repairable,
        "order_kind": getattr(ours, "kind", None),
        "merchant": getattr(ours, "merchant", None),
        "out_trade_no": (
            line.out_trade_no if line else getattr(ours, "out_trade_no", None)
        ),
        "transaction_id": line.transaction_id if line else None,
        "out_refund_no": (line.out_refund_no if line else None)
        or getattr(ours, "out_refund_no", None),
        "our_state": getattr(ours, "state", None),
        "channel_state": line.state.value if line else None,
        "our_amount_fen": getattr(ours, "amount_fen", None),
        "channel_amount_fen": line.amount_fen if line else None,
        "bill_line": line.line if line else None,
        "note": finding.note[:255],
        "hold_until": None,
        "closed_at": None,
        "resolved_by": None,
        "found_at": utcnow(),
    }
    if _ours_only(finding) and hold_days > 0:
        # Closed by the later day's run that lists the order (or refund); a later
        # day reconciled first has recorded it matched already, and ``known`` has
        # it.
        discrepancy["status"] = DiscrepancyStatus.HELD
        discrepancy["hold_until"] = day + dt.timedelta(days=hold_days)
    repaired = False
    if finding.repairable and line:
        if finding.kind is FindingKind.CHANNEL_ONLY:
            repaired = _repair(session, channel, line, finding)
        elif finding.kind is FindingKind.REFUND_MISMATCH:
            repaired = _repair_refund(session, channel, line)
    if repaired:
        discrepancy["status"] = DiscrepancyStatus.REPAIRED
        discrepancy["closed_at"] = utcnow()
        discrepancy["resolved_by"] = "reconciliation"
        # Repaired, the line counts for its merchant as a matched one does.
        fee = merchant_fee(finding)
        if fee is not None:
            record_fees(session, channel, day, [fee])
    rows.append(discrepancy)


def _ours_only(finding: Finding) -> bool:
    """An order we settled, or a refund we made, that the bill does not list: it
    may be listed in the next day's bill."""
    return finding.line is None and finding.kind in _HELD_KINDS


_HELD_KINDS = {FindingKind.OURS_ONLY, FindingKind.REFUND_MISMATCH}


def _repair(session: Session, channel: str, line: BillLine, finding: Finding) -> bool:
    """Settle a lost notification's order through its own settle function."""
    kind = orders.order_kind_for(session, line.out_trade_no)
    if kind is None:
        return False
    outcome = kind.settle(
        session,
        channel,
        PaymentResult(
            out_trade_no=line.out_trade_no,
            state=TradeState.SUCCEEDED,
            transaction_id=line.transaction_id,
            amount_fen=line.amount_fen,
            paid_at=line.traded_at,
        ),
        via="reconciliation",
    )
    logger.info(
        "reconciliation_repair",
        extra={
            "channel": channel,
            "out_trade_no": line.out_trade_no,
            "outcome": outcome.value,
        },
    )
    return outcome in {SettleOutcome.CREDITED, SettleOutcome.ALREADY}


def _repair_refund(session: Session, channel: str, line: BillLine) -> bool:
    """Settle a refund whose notification was lost through its own settle function,
    as the notification would have. It finishes when the bill says the channel
    finished it, so that it counts on the bill's day, not on the day repaired."""
    kind = orders.refund_kind_for(session, line.out_refund_no)
    if kind is None:
        return False
    outcome = kind.settle(
        session,
        channel,
        RefundResult(
            out_refund_no=line.out_refund_no,
            state=RefundState.SUCCEEDED,
            refund_id=line.refund_id or None,
            amount_fen=line.amount_fen,
            out_trade_no=line.out_trade_no,
        ),
        via="reconciliation",
        now=line.traded_at,
    )
    logger.info(
        "reconciliation_refund_repair",
        extra={
            "channel": channel,
            "out_refund_no": line.out_refund_no,
            "outcome": outcome.value,
        },
    )
    return outcome in {SettleOutcome.CREDITED, SettleOutcome.ALREADY}


def _close_held(
    session: Session,
    channel: str,
    day: dt.date,
    ours: OrderRecord | RefundRecord,
    at: dt.datetime,
) -> Discrepancy | None:
    """Close what was held (or opened) as ours-only for an order paid (or a
    refund made, at ``at``) on an earlier day that ``day``'s bill listed. The
    ours-only item finance resolved by reversing our booking, if there is one:
    the listing contradicts it."""
    kind, key = _held_identity(ours)
    items = session.scalars(
        select(Discrepancy).where(
            Discrepancy.channel == channel,
            Discrepancy.kind == kind.value,
            Discrepancy.key == key,
            Discrepancy.channel_state.is_(None),
        )
    ).all()
    if not items:
        _matched_before_its_day(session, channel, day, ours, at)
        return None
    reversed_by = None
    for item in items:
        if item.status in {DiscrepancyStatus.HELD, DiscrepancyStatus.OPEN}:
            item.status = DiscrepancyStatus.MATCHED_LATE
            item.matched_on = day
            item.closed_at = utcnow()
            item.resolved_by = "reconciliation"
        elif (
            item.status is DiscrepancyStatus.RESOLVED
            and item.resolution == "trust_channel"
            and item.entry_id is not None
        ):
            reversed_by = item
    return reversed_by


def _held_identity(ours: OrderRecord | RefundRecord) -> tuple[FindingKind, str]:
    if isinstance(ours, RefundRecord):
        return FindingKind.REFUND_MISMATCH, ours.out_refund_no[:64]
    return FindingKind.OURS_ONLY, ours.out_trade_no[:64]


def _matched_before_its_day(
    session: Session,
    channel: str,
    day: dt.date,
    ours: OrderRecord | RefundRecord,
    at: dt.datetime,
) -> None:
    """The order's (or refund's) own day has not been reconciled yet (its bill
    came late): record its ours-only item as already matched late, so that the
    run of that day, which will not find it in its bill, counts it matched
    instead of holding it (``_record_all`` skips what is recorded)."""
    zone = current_app.extensions["campus.settings"].zone
    own_day = at.astimezone(zone).date()
    done = session.scalar(
        select(ReconciliationRun.id).where(
            ReconciliationRun.channel == channel,
            ReconciliationRun.day == own_day,
            ReconciliationRun.state == RunState.FINISHED,
        )
    )
    if done is not None or own_day >= day:
        return
    kind, key = _held_identity(ours)
    session.add(
        Discrepancy(
            channel=channel,
            day=own_day,
            kind=kind.value,
            key=key,
            status=DiscrepancyStatus.MATCHED_LATE,
            order_kind=ours.kind,
            merchant=ours.merchant,
            out_trade_no=ours.out_trade_no,
            out_refund_no=getattr(ours, "out_refund_no", None),
            our_state=ours.state,
            our_amount_fen=ours.amount_fen,
            note=f"listed in the bill of {day}, reconciled before {own_day}"[:255],
            matched_on=day,
            closed_at=utcnow(),
            resolved_by="reconciliation",
        )
    )
    logger.info(
        "reconciliation_matched_before_its_day",
        extra={"channel": channel, "key": key, "day": str(day)},
    )


def _release_expired_holds(session: Session, channel: str, day: dt.date) -> int:
    expired = session.scalars(
        select(Discrepancy).where(
            Discrepancy.channel == channel,
            Discrepancy.status == DiscrepancyStatus.HELD,
            Discrepancy.hold_until < day,
        )
    ).all()
    for item in expired:
        item.status = DiscrepancyStatus.OPEN
    return len(expired)


def days_to_run(
    today: dt.date, *, look_back: int, channels: Sequence[str]
) -> list[dt.date]:
    """The days a nightly run on ``today`` reconciles, oldest first: yesterday,
    and any of the ``look_back`` days up to it whose run of some channel did not
    finish (it failed, died, or the night was missed altogether)."""
    first = today - dt.timedelta(days=max(look_back, 1))
    finished = db.session.execute(
        select(ReconciliationRun.day, func.count())
        .where(
            ReconciliationRun.day >= first,
            ReconciliationRun.day < today,
            ReconciliationRun.channel.in_(channels),
            ReconciliationRun.state == RunState.FINISHED,
        )
        .group_by(ReconciliationRun.day)
    ).all()
    done = {day for day, count in finished if count == len(set(channels))}
    days = (first + dt.timedelta(days=n) for n in range((today - first).days))
    return [day for day in days if day not in done]
