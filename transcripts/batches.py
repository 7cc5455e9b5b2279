"""Cohort batches: issue transcripts for many students, in parallel, resumably.

A ``Batch`` is a list of ``BatchItem`` rows, one per student, written before any
work starts. Workers take items and run ``registry.issue`` for each; the issuance
row and the item's new status are committed in one transaction, and an issuance
carries its item's id under a unique constraint. So:

- a crash (the machine, the process, a kill -9) loses at most the work in flight;
  running the batch again picks up the items still ``pending``;
- no item is ever issued twice, even if two runners take the same item at once:
  the second commit fails on the constraint and is counted as done;
- failures are kept on their items with the step and message, listed at the end,
  and retried only when asked.

Two backends run the items, chosen by ``CAMPUS_TRANSCRIPTS_BATCH_BACKEND``;
both call ``issue_in_worker(item_id)`` in a process set up once by
``worker_init`` (its own app and database engine, the font, the signing key and,
after its first document, cached revocation answers):

- ``process`` (default): a pool of worker processes on this machine, forked from
  a fork server that has the libraries imported; ``run_batch`` watches futures.
- ``rq``: one job per pending item in a Redis queue (``transcripts.batch_queue``),
  taken by ``flask transcripts worker`` processes on any number of machines
  that share the database, the issued-file storage and the signing key;
  ``run_batch`` enqueues and then watches the item rows. A job's id is made
  from its item's id, so enqueueing a batch twice queues nobody twice; the
  unique constraint above stays the guarantee when two jobs of one item run.

Whatever the backend, the item rows are the truth: progress is counted from
them, and a worker that dies mid-item leaves that item ``pending`` for the next
run (or, on ``rq``, for the watcher once it sees no progress).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import enum
import logging
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from campus.database import Base, db, str_enum, utcnow
from campus.people import Person
from transcripts.records import StudentRecord, StudyStatus

logger = logging.getLogger(__name__)


class ItemStatus(enum.StrEnum):
    """Where one student of a batch stands."""

    PENDING = "pending"
    """Not issued yet: waiting, in flight, or interrupted by a crash."""

    ISSUED = "issued"
    """Issued; the issuance whose ``batch_item_id`` is this item's id."""

    FAILED = "failed"
    """Layout, signing or storage failed; ``error`` says how. Retried only on
    request."""


class Batch(Base):
    __tablename__ = "transcript_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(256))
    college: Mapped[str | None] = mapped_column(String(128))
    graduation_year: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]


class BatchItem(Base):
    __tablename__ = "transcript_batch_items"
    __table_args__ = (UniqueConstraint("batch_id", "student_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_batches.id", ondelete="CASCADE"), index=True
    )
    student_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_students.id", ondelete="CASCADE")
    )
    status: Mapped[ItemStatus] = mapped_column(str_enum(ItemStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


@dataclasses.dataclass(frozen=True)
class Progress:
    batch_id: int
    total: int
    issued: int
    failed: int
    pending: int
    finished: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cohort(
    session: Session, *, college: str | None, graduation_year: int | None
) -> list[StudentRecord]:
    """Graduates of ``college`` (Chinese or English name; all when None) who
    graduated in ``graduation_year`` (all years when None), by number."""
    query = (
        select(StudentRecord)
        .join(Person, StudentRecord.person_id == Person.id)
        .where(StudentRecord.status == StudyStatus.GRADUATED)
        .order_by(Person.number)
    )
    if college:
        query = query.where(
            (StudentRecord.college_zh == college)
            | (StudentRecord.college_en == college)
        )
    students = list(session.scalars(query))
    if graduation_year is not None:
        students = [
            s
            for s in students
            if s.graduated_on is not None and s.graduated_on.year == graduation_year
        ]
    return students


def create_batch(
    session: Session,
    *,
    college: str | None,
    graduation_year: int | None,
    actor: str,
    now: dt.datetime | None = None,
) -> Batch:
    now = now or utcnow()
    students = cohort(session, college=college, graduation_year=graduation_year)
    label = " · ".join(
        part
        for part in (college or "all colleges", f"graduated {graduation_year}")
        if part
    )
    batch = Batch(
        label=label if graduation_year else college or "all graduates",
        college=college,
        graduation_year=graduation_year,
        created_by=actor,
        created_at=now,
    )
    session.add(batch)
    session.flush()
    session.add_all(
        BatchItem(batch_id=batch.id, student_id=s.id, status=ItemStatus.PENDING)
        for s in students
    )
    session.flush()
    logger.info("batch_created", extra={"batch": batch.id, "items": len(students)})
    return batch


def unfinished_batch(
    session: Session, *, college: str | None, graduation_year: int | None
) -> Batch | None:
    """The latest batch for the same cohort that has not finished: resuming it
    is what the operator wants after a crash, not a second batch."""
    return session.scalar(
        select(Batch)
        .where(
            Batch.finished_at.is_(None),
            Batch.college.is_(None) if college is None else Batch.college == college,
            Batch.graduation_year.is_(None)
            if graduation_year is None
            else Batch.graduation_year == graduation_year,
        )
        .order_by(Batch.id.desc())
        .limit(1)
    )


def progress(session: Session, batch_id: int) -> Progress:
    """Counted by the database: the watcher of a queued batch asks twice a
    second, for cohorts of thousands."""
    counts = dict(
        session.execute(
            select(BatchItem.status, func.count())
            .where(BatchItem.batch_id == batch_id)
            .group_by(BatchItem.status)
        ).all()
    )
    finished_at = session.scalar(select(Batch.finished_at).where(Batch.id == batch_id))
    return Progress(
        batch_id=batch_id,
        total=sum(counts.values()),
        issued=counts.get(ItemStatus.ISSUED, 0),
        failed=counts.get(ItemStatus.FAILED, 0),
        pending=counts.get(ItemStatus.PENDING, 0),
        finished=finished_at is not None,
    )


def pending_items(session: Session, batch_id: int) -> list[int]:
    """Ids of the items not issued and not failed, in order."""
    return list(
        session.scalars(
            select(BatchItem.id)
            .where(
                BatchItem.batch_id == batch_id, BatchItem.status == ItemStatus.PENDING
            )
            .order_by(BatchItem.id)
        )
    )


def failures(session: Session, batch_id: int) -> list[tuple[str, str]]:
    """``(student number, error)`` of the failed items."""
    rows = session.execute(
        select(Person.number, BatchItem.error)
        .join(StudentRecord, BatchItem.student_id == StudentRecord.id)
        .join(Person, StudentRecord.person_id == Person.id)
        .where(BatchItem.batch_id == batch_id, BatchItem.status == ItemStatus.FAILED)
        .order_by(Person.number)
    )
    return [(number, error or "") for number, error in rows]


# -- one item: the unit of work of every backend ---------------------------------------


def issue_item(item_id: int, now: dt.datetime | None = None) -> tuple[int, str]:
    """Issue one batch item in the current app context; ``(item id, status)``.
    Safe to call twice for one item, also at the same time."""
    from transcripts import registry

    # Its own session, not the thread's: a caller's session (a test, the web
    # request that runs a small batch inline) is left as it was.
    session = db.new_session()
    try:
        item = session.get(BatchItem, item_id)
        if item is None or item.status is not ItemStatus.PENDING:
            return item_id, item.status.value if item else "missing"
        batch_id = item.batch_id
        student = session.get(StudentRecord, item.student_id)
        assert student is not None
        try:
            prepared = registry.prepare(
                session,
                student,
                now=now or utcnow(),
                service=registry.transcript_service(),
            )
        except registry.IssuanceFailed as failure:
            session.rollback()
            _mark(
                session,
                item_id,
                ItemStatus.FAILED,
                f"{failure.step}: {failure.internal_detail}",
            )
            session.commit()
            logger.warning(
                "batch_item_failed",
                extra={"batch": batch_id, "item": item_id, "step": failure.step},
            )
            return item_id, ItemStatus.FAILED.value
        # Writes start with the insert, in a fresh transaction: see
        # ``registry.end_read_snapshot``.
        session.rollback()
        try:
            registry.register(
                session, prepared, actor=f"batch:{batch_id}", batch_item_id=item_id
            )
            _mark(session, item_id, ItemStatus.ISSUED, None)
            session.commit()
        except IntegrityError:
            # Another runner issued this item first; its issuance stands.
            session.rollback()
            logger.info("batch_item_raced", extra={"item": item_id})
        return item_id, ItemStatus.ISSUED.value
    finally:
        session.close()


def _mark(
    session: Session, item_id: int, status: ItemStatus, error: str | None
) -> None:
    query = update(BatchItem).where(BatchItem.id == item_id)
    if status is ItemStatus.FAILED:
        # A failure never overwrites the issuance of a runner that finished the
        # same item meanwhile (a re-queued job, a resumed run).
        query = query.where(BatchItem.status == ItemStatus.PENDING)
    session.execute(
        query.values(
            status=status,
            attempts=BatchItem.attempts + 1,
            error=None if error is None else error[:2000],
            updated_at=utcnow(),
        )
    )


# -- a worker process, of either backend ---------------------------------------------

_worker_app: Flask | None = None


def worker_init(settings: Any = None, *, app: Flask | None = None) -> None:
    """Start-up of one worker process, once, not per item: its own app (engine,
    signer) unless given one, the font, and the signing key, so that each item
    pays only for its own document. ``settings`` None reads the environment."""
    global _worker_app
    from campus import create_app
    from signing import signing_service
    from transcripts.layout import register_font

    _worker_app = app if app is not None else create_app(settings)
    register_font()
    # Loads the key (a PKCS#12 file or a token session) now; the revocation
    # answers follow with the first signature and stay cached in the signer.
    signing_service(_worker_app).signer  # noqa: B018 - built for its side effect
    logger.info("batch_worker_ready", extra={"pid": os.getpid()})


def issue_in_worker(item_id: int) -> tuple[int, str]:
    """The job of both backends: issue one item in the worker's app.

    An error that is not an ``IssuanceFailed`` (a lost database connection, a
    bug) is recorded on the item as a ``worker`` failure, so that it is listed
    with the others instead of stopping the batch or vanishing into a queue's
    failed-job registry."""
    if _worker_app is None:
        # A plain ``rq worker`` never ran our start-up: do it on the first job.
        worker_init()
    assert _worker_app is not None
    with _worker_app.app_context():
        try:
            return issue_item(item_id)
        except Exception as error:
            logger.exception("batch_item_crashed", extra={"item": item_id})
            session = db.new_session()
            try:
                _mark(
                    session,
                    item_id,
                    ItemStatus.FAILED,
                    f"worker: {type(error).__name__}: {error}",
                )
                session.commit()
            finally:
                session.close()
            return item_id, ItemStatus.FAILED.value


def run_batch(
    app: Flask,
    batch_id: int,
    *,
    workers: int | None = None,
    retry_failed: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    backend: str | None = None,
) -> Progress:
    """Issue every pending item of the batch on the configured backend (or
    ``backend``); returns the final progress. Re-running it resumes.

    ``workers`` sizes the local pool; on ``rq`` the workers are whatever
    ``flask transcripts worker`` processes listen to the queue."""
    from transcripts.registry import transcript_service

    config = transcript_service(app).config
    backend = backend or config.batch_backend
    session = db.session()
    if retry_failed:
        for item in session.scalars(
            select(BatchItem).where(
                BatchItem.batch_id == batch_id, BatchItem.status == ItemStatus.FAILED
            )
        ):
            item.status = ItemStatus.PENDING
        session.commit()
    pending = pending_items(session, batch_id)
    state = progress(session, batch_id)
    session.commit()
    logger.info(
        "batch_started",
        extra={
            "batch": batch_id,
            "backend": backend,
            "pending": len(pending),
            "issued": state.issued,
        },
    )
    if on_progress:
        on_progress(state)

    if pending:
        # The signing service's trust services (development TSA, OCSP, CRLs)
        # start here once, not in whichever worker signs first and may die.
        _prepare_signing(app)
        if backend == "rq":
            from transcripts import batch_queue

            batch_queue.run(app, batch_id, pending, on_progress=on_progress)
        else:
            count = workers or config.workers or os.cpu_count() or 1
            _run_in_pool(app, batch_id, pending, count, on_progress)

    state = progress(session, batch_id)
    if state.pending == 0:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        if batch.finished_at is None:
            batch.finished_at = utcnow()
        state = dataclasses.replace(state, finished=True)
    session.commit()
    logger.info(
        "batch_finished" if state.finished else "batch_left_unfinished",
        extra={
            "batch": batch_id,
            "issued": state.issued,
            "failed": state.failed,
            "pending": state.pending,
        },
    )
    return state


# -- the local process pool ------------------------------------------------------------


def _run_in_pool(
    app: Flask,
    batch_id: int,
    pending: list[int],
    workers: int,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    session = db.session()
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(pending))),
        mp_context=_worker_context(),
        initializer=worker_init,
        initargs=(app.extensions["campus.settings"],),
    ) as pool:
        futures = [pool.submit(issue_in_worker, item_id) for item_id in pending]
        for future in concurrent.futures.as_completed(futures):
            item_id, status = future.result()
            logger.info(
                "batch_item_done",
                extra={"batch": batch_id, "item": item_id, "status": status},
            )
            if on_progress:
                on_progress(progress(session, batch_id))
                session.commit()


def _worker_context() -> Any:
    """Workers come from a fork server that has imported the heavy libraries
    once (reportlab, pyHanko, SQLAlchemy, the app's packages): a new worker then
    costs a fork and an app, not a fresh interpreter's imports. The server is
    single-threaded, so forking it is safe, unlike forking this process, whose
    threads (web server, trust services) may hold locks."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["campus", "transcripts.batches", "transcripts.layout", "signing.service"]
    )
    return context


def _prepare_signing(app: Flask) -> None:
    from signing import signing_service

    service = signing_service(app)
    ensure = getattr(service, "ensure_trust_services", None)
    if ensure is not None:
        ensure()
