"""The issuance registry: every transcript ever issued, its hash, code and status.

``issue`` turns a student's records into a signed, registered, stored file:

    records → data (``document``) → PDF (``layout``) → signature (``signing``)
    → SHA-256 → file stored → ``Issuance`` row and its audit event

The slow steps (layout and signing) run before any row is written, so a failure
leaves nothing behind but, at worst, a stored file no row points at (harmless:
files are keyed by their hash). Nothing user-supplied is ever signed: the signer
only sees bytes this module rendered from the database.

An issuance is ``valid`` until the registrar revokes it (with a reason) or
supersedes it with a newer one (after a grade correction, say); past its
``valid_until`` it reads as expired without any change to the row. Every change is
an ``IssuanceEvent`` with who, when and why.

Errors::

    campus.errors.CampusError
    ├── NotFound
    │   └── NoStudentRecord      the person has no academic record
    ├── Conflict
    │   └── StatusConflict       revoking or superseding what is not valid
    ├── InvalidInput
    │   └── ReasonRequired       a revocation or supersession without a reason
    └── IssuanceFailed (503)     layout, signing or storage failed; nothing
                                 was registered (``step`` says which)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import logging
from typing import Any

from flask import Flask, current_app
from flask_babel import lazy_gettext
from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from campus.database import Base, str_enum, utcnow
from campus.errors import CampusError, Conflict, InvalidInput, NotFound
from transcripts import codes
from transcripts.config import TranscriptConfig
from transcripts.document import LAYOUT_VERSION, to_json, transcript_data
from transcripts.records import StudentRecord
from transcripts.storage import FileStorage, IssuanceStorage, StorageError

logger = logging.getLogger(__name__)

EXTENSION = "campus.transcripts"


class IssuanceStatus(enum.StrEnum):
    """What the registry says about an issued file (expiry is read from
    ``valid_until``, not stored)."""

    VALID = "valid"
    """Issued and standing."""

    REVOKED = "revoked"
    """Withdrawn by the registrar; ``status_reason`` says why."""

    SUPERSEDED = "superseded"
    """Replaced by ``superseded_by``; ``status_reason`` says why."""


class IssuanceAction(enum.StrEnum):
    """What an audit event records."""

    ISSUED = "issued"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"


class Issuance(Base):
    __tablename__ = "transcript_issuances"
    __table_args__ = (UniqueConstraint("student_id", "document_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_students.id", ondelete="RESTRICT"), index=True
    )
    document_version: Mapped[int] = mapped_column(Integer)
    """1 for the student's first issuance, then 2, 3, …"""
    layout_version: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    """Of the signed file as stored and handed out."""
    code: Mapped[str] = mapped_column(String(24), unique=True)
    """Verification code, grouped (``transcripts.codes``)."""
    issued_at: Mapped[dt.datetime]
    valid_until: Mapped[dt.datetime]
    status: Mapped[IssuanceStatus] = mapped_column(str_enum(IssuanceStatus))
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[dt.datetime | None]
    superseded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("transcript_issuances.id", ondelete="RESTRICT")
    )
    storage_key: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(Integer)
    signature_level: Mapped[str] = mapped_column(String(8))
    issued_by: Mapped[str] = mapped_column(String(64))
    batch_item_id: Mapped[int | None] = mapped_column(
        ForeignKey("transcript_batch_items.id", ondelete="SET NULL"), unique=True
    )
    """Set when a batch issued it; unique, so a batch can never issue one item
    twice, whatever crashes and retries happen."""

    student: Mapped[StudentRecord] = relationship(lazy="joined")
    superseded_by: Mapped[Issuance | None] = relationship(remote_side=[id])

    def effective_status(self, now: dt.datetime) -> str:
        """``valid``, ``expired``, ``revoked`` or ``superseded``."""
        if self.status is IssuanceStatus.VALID and now >= self.valid_until:
            return "expired"
        return self.status.value

    def __repr__(self) -> str:
        return f"<Issuance {self.id} v{self.document_version} {self.status}>"


class IssuanceEvent(Base):
    """The audit trail of the registry: one row per change."""

    __tablename__ = "transcript_issuance_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    issuance_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_issuances.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime]
    action: Mapped[IssuanceAction] = mapped_column(str_enum(IssuanceAction))
    actor: Mapped[str] = mapped_column(String(64))
    """``operator:<username>``, ``student:<number>``, ``batch:<id>`` or ``cli``."""
    reason: Mapped[str | None] = mapped_column(Text)


class NoStudentRecord(NotFound):
    code = "no_student_record"
    title = lazy_gettext("No academic record")


class StatusConflict(Conflict):
    code = "issuance_status_conflict"
    title = lazy_gettext("Only a valid transcript can be changed")


class ReasonRequired(InvalidInput):
    code = "reason_required"
    title = lazy_gettext("Please give a reason")


class IssuanceFailed(CampusError):
    status = 503
    code = "issuance_failed"
    title = lazy_gettext("The transcript could not be issued")

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(self.title, step=step)
        self.step = step
        self.internal_detail = detail


# -- the service the app keeps ---------------------------------------------------------


@dataclasses.dataclass
class TranscriptService:
    """Configuration and collaborators of transcripts in one process."""

    config: TranscriptConfig
    storage: IssuanceStorage
    base_url: str
    app: Flask

    def verify_url(self, code: str) -> str:
        """Where the QR code points: the verification page of this code."""
        return f"{self.base_url.rstrip('/')}/v/{code}"

    def sign(self, pdf: bytes) -> tuple[bytes, str]:
        """The one place transcripts calls ``signing``: the finished file in,
        the signed file and the PAdES level out."""
        from signing import signing_service
        from signing.config import Level

        service = signing_service(self.app)
        level = (
            Level.parse(self.config.signing_level)
            if self.config.signing_level
            else service.config.level
        )
        signed = service.sign(
            pdf,
            level=level,
            reason=f"{self.config.university_en} {self.config.registrar_en}: "
            "academic transcript",
            location=self.config.university_en,
        )
        return signed, level.value


def make_service(app: Flask, config: TranscriptConfig) -> TranscriptService:
    settings = app.extensions["campus.settings"]
    return TranscriptService(
        config=config,
        storage=FileStorage(config.files_path(settings.instance_path)),
        base_url=settings.base_url,
        app=app,
    )


def transcript_service(app: Flask | None = None) -> TranscriptService:
    return (app or current_app).extensions[EXTENSION]  # type: ignore[no-any-return]


# -- issuing ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RenderedTranscript:
    data: dict[str, Any]
    pdf: bytes


def render_transcript(
    session: Session,
    service: TranscriptService,
    student: StudentRecord,
    *,
    now: dt.datetime,
    code: str | None = None,
    document_version: int | None = None,
) -> RenderedTranscript:
    """The complete, unsigned PDF of ``student``'s records as of now."""
    from transcripts.layout import render

    code = code or codes.new_code()
    if document_version is None:
        document_version = next_version(session, student)
    data = transcript_data(
        session,
        student,
        service.config,
        code=code,
        issued_at=now,
        valid_until=now + dt.timedelta(days=service.config.validity_days),
        verify_url=service.verify_url(code),
        document_version=document_version,
    )
    return RenderedTranscript(data, render(data, to_json(data)))


def next_version(session: Session, student: StudentRecord) -> int:
    latest = session.scalar(
        select(func.max(Issuance.document_version)).where(
            Issuance.student_id == student.id
        )
    )
    return (latest or 0) + 1


@dataclasses.dataclass(frozen=True)
class PreparedIssuance:
    """A signed file ready to be registered."""

    student_id: int
    data: dict[str, Any]
    signed: bytes
    level: str
    storage_key: str
    issued_at: dt.datetime
    valid_until: dt.datetime


def prepare(
    session: Session,
    student: StudentRecord,
    *,
    now: dt.datetime,
    service: TranscriptService,
) -> PreparedIssuance:
    """Render, sign and store; writes no row."""
    from signing.errors import SigningError

    try:
        rendered = render_transcript(session, service, student, now=now)
    except Exception as error:  # noqa: BLE001 - any layout failure is one answer
        logger.exception("transcript_render_failed", extra={"student": student.id})
        raise IssuanceFailed("render", str(error)) from error
    try:
        signed, level = service.sign(rendered.pdf)
    except SigningError as error:
        logger.error(
            "transcript_signing_failed",
            extra={"student": student.id, "error": str(error)},
        )
        raise IssuanceFailed("sign", str(error)) from error
    try:
        key = service.storage.put(signed)
    except StorageError as error:
        raise IssuanceFailed("store", str(error)) from error
    return PreparedIssuance(
        student_id=student.id,
        data=rendered.data,
        signed=signed,
        level=level,
        storage_key=key,
        issued_at=now,
        valid_until=now + dt.timedelta(days=service.config.validity_days),
    )


def end_read_snapshot(session: Session) -> None:
    """End a transaction that has only read, before a slow step's writes.

    SQLite in WAL mode cannot turn a read transaction into a write transaction
    once another connection has committed since it began ("database is
    locked", whatever the busy timeout); rendering and signing take long
    enough for that to happen in a batch. A transaction with pending changes is
    the caller's and is left alone."""
    if not (session.new or session.dirty or session.deleted):
        session.rollback()


def register(
    session: Session,
    prepared: PreparedIssuance,
    *,
    actor: str,
    batch_item_id: int | None = None,
) -> Issuance:
    """Write the issuance row and its audit event (the insert comes first, so
    that on SQLite the transaction takes the write lock before reading)."""
    data = prepared.data
    issuance = Issuance(
        student_id=prepared.student_id,
        document_version=data["issuance"]["document_version"],
        layout_version=LAYOUT_VERSION,
        sha256=hashlib.sha256(prepared.signed).hexdigest(),
        code=data["issuance"]["verification_code"],
        issued_at=prepared.issued_at,
        valid_until=prepared.valid_until,
        status=IssuanceStatus.VALID,
        storage_key=prepared.storage_key,
        size_bytes=len(prepared.signed),
        signature_level=prepared.level,
        issued_by=actor,
        batch_item_id=batch_item_id,
    )
    session.add(issuance)
    session.flush()
    _audit(session, issuance, IssuanceAction.ISSUED, actor, prepared.issued_at, None)
    logger.info(
        "transcript_issued",
        extra={
            "issuance": issuance.id,
            "student": prepared.student_id,
            "version": issuance.document_version,
            "level": prepared.level,
            "bytes": issuance.size_bytes,
        },
    )
    return issuance


def issue(
    session: Session,
    student: StudentRecord,
    *,
    actor: str,
    now: dt.datetime | None = None,
    batch_item_id: int | None = None,
    service: TranscriptService | None = None,
) -> Issuance:
    """Render, sign, store and register a transcript of ``student``. The caller
    commits; the row and its audit event are flushed."""
    service = service or transcript_service()
    prepared = prepare(session, student, now=now or utcnow(), service=service)
    end_read_snapshot(session)
    return register(session, prepared, actor=actor, batch_item_id=batch_item_id)


def _audit(
    session: Session,
    issuance: Issuance,
    action: IssuanceAction,
    actor: str,
    now: dt.datetime,
    reason: str | None,
) -> None:
    session.add(
        IssuanceEvent(
            issuance_id=issuance.id, at=now, action=action, actor=actor, reason=reason
        )
    )
    session.flush()


def _locked_valid(session: Session, issuance_id: int) -> Issuance:
    # ``of``: the student and person are joined in eagerly, and PostgreSQL
    # refuses to lock the nullable side of an outer join.
    issuance = session.scalar(
        select(Issuance)
        .where(Issuance.id == issuance_id)
        .with_for_update(of=Issuance)
        .execution_options(populate_existing=True)
    )
    if issuance is None:
        raise NotFound()
    if issuance.status is not IssuanceStatus.VALID:
        raise StatusConflict(
            lazy_gettext(
                "This transcript is already %(status)s.", status=issuance.status
            )
        )
    return issuance


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired()
    return reason[:2000]


def revoke(
    session: Session,
    issuance_id: int,
    *,
    reason: str,
    actor: str,
    now: dt.datetime | None = None,
) -> Issuance:
    reason = _reason(reason)
    now = now or utcnow()
    issuance = _locked_valid(session, issuance_id)
    issuance.status = IssuanceStatus.REVOKED
    issuance.status_reason = reason
    issuance.status_changed_at = now
    _audit(session, issuance, IssuanceAction.REVOKED, actor, now, reason)
    logger.info("transcript_revoked", extra={"issuance": issuance.id})
    return issuance


def supersede(
    session: Session,
    issuance_id: int,
    *,
    reason: str,
    actor: str,
    now: dt.datetime | None = None,
    service: TranscriptService | None = None,
) -> Issuance:
    """Issue a new transcript from the current records and mark the old one
    superseded by it. Returns the new issuance."""
    reason = _reason(reason)
    now = now or utcnow()
    service = service or transcript_service()
    old = session.get(Issuance, issuance_id)
    if old is None:
        raise NotFound()
    if old.status is not IssuanceStatus.VALID:
        raise StatusConflict(
            lazy_gettext("This transcript is already %(status)s.", status=old.status)
        )
    prepared = prepare(session, old.student, now=now, service=service)
    end_read_snapshot(session)
    new = register(session, prepared, actor=actor)
    # Checked again under the row lock: a competing revocation may have come
    # first while the new file was being signed.
    old = _locked_valid(session, issuance_id)
    old.status = IssuanceStatus.SUPERSEDED
    old.status_reason = reason
    old.status_changed_at = now
    old.superseded_by_id = new.id
    _audit(session, old, IssuanceAction.SUPERSEDED, actor, now, reason)
    logger.info(
        "transcript_superseded", extra={"issuance": old.id, "superseded_by": new.id}
    )
    return new


# -- reading ---------------------------------------------------------------------------


def issuances_of(session: Session, student: StudentRecord) -> list[Issuance]:
    return list(
        session.scalars(
            select(Issuance)
            .where(Issuance.student_id == student.id)
            .order_by(Issuance.document_version.desc())
        )
    )


def current_issuance(
    session: Session, student: StudentRecord, now: dt.datetime
) -> Issuance | None:
    """The newest issuance that is valid and not expired."""
    return session.scalar(
        select(Issuance)
        .where(
            Issuance.student_id == student.id,
            Issuance.status == IssuanceStatus.VALID,
            Issuance.valid_until > now,
        )
        .order_by(Issuance.document_version.desc())
        .limit(1)
    )


def find_by_code(session: Session, typed: str) -> Issuance | None:
    """The issuance of a typed code; ``codes.MalformedCode`` for a typo."""
    return session.scalar(
        select(Issuance).where(Issuance.code == codes.normalise(typed))
    )


def find_by_sha256(session: Session, digest: str) -> Issuance | None:
    return session.scalar(select(Issuance).where(Issuance.sha256 == digest.lower()))


def events_of(session: Session, issuance: Issuance) -> list[IssuanceEvent]:
    return list(
        session.scalars(
            select(IssuanceEvent)
            .where(IssuanceEvent.issuance_id == issuance.id)
            .order_by(IssuanceEvent.id)
        )
    )


def stored_file(issuance: Issuance, service: TranscriptService | None = None) -> bytes:
    return (service or transcript_service()).storage.get(issuance.storage_key)
