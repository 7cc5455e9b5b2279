"""Verification for employers: a file, a code or a share link in, one answer out.

An upload goes through ``signing``'s validator (in a child process with a hard
deadline, ``signing.workers``) and then to the registry, by the SHA-256 of
the file or of the signed revision it starts with::

    bytes → size and header → validation report → outcome → registry → status

A code goes through its check symbol first (``codes.normalise``: a typo never
reaches the database), then to the registry. A share link's stored file is
validated like an upload, and the graduate's link log records the check.

Every answer is a ``Verification``: one stable ``VerificationOutcome``, the
registry status (``valid``, ``revoked``, ``superseded``, ``expired``), the facts
of the issuance when one was found, and each check with its own mark. Every
answer is also a row of the access log (``VerificationRecord``), with the
issuance when there is one; an unknown code is stored only as a digest, and
nothing about the visitor is stored at all.

Errors (each a problem with a stable ``code``)::

    campus.errors.CampusError
    ├── InvalidInput (400)
    │   ├── NotAPdf               not a PDF this service can read
    │   └── codes.MalformedCode   the check symbol caught a typo
    ├── NotFound (404)
    │   ├── UnknownCode           a well-formed code that names nothing
    │   └── sharing.LinkUnavailable
    ├── FileTooLarge (413)        over ``CAMPUS_VERIFICATION_MAX_BYTES``
    ├── CheckTimedOut (422)       the deadline passed while checking
    └── VerificationBusy (503)    every worker stayed busy for the deadline
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from flask_babel import LazyString, format_datetime, lazy_gettext
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from campus.database import Base, str_enum
from campus.errors import CampusError, InvalidInput, NotFound
from campus.settings import SettingsError
from signing.validator import Outcome as CheckOutcome
from signing.validator import SignatureReport, ValidationReport
from signing.workers import (
    Busy,
    OutOfTime,
    ValidationWorkers,
    WorkerFailed,
    shared_workers,
)
from transcripts import codes, registry, sharing

logger = logging.getLogger(__name__)

EXTENSION = "campus.transcripts.verification"
PREFIX = "CAMPUS_VERIFICATION_"
HEADER_WINDOW = 1024
"""A PDF header must appear within the first kilobyte (ISO 32000-2, 7.5.2)."""

MAX_REVISIONS = 32
"""Earlier revisions looked up in the registry, newest first."""


# -- settings --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VerificationConfig:
    """``CAMPUS_VERIFICATION_*``: limits of the public verification pages and API."""

    max_bytes: int = 10 * 1024 * 1024
    """Largest upload checked. Issued transcripts are well under 1 MB."""

    seconds: float = 10.0
    """Hard deadline of one file's check; the worker is killed after it."""

    workers: int = 2
    """Child processes validating uploads at the same time."""

    worker_memory_mb: int = 1024
    """Address-space limit of each worker; 0 for none."""

    code_limit: str = "60 per minute; 600 per hour"
    """Code look-ups per client IP address, whatever their answer."""

    wrong_code_limit: str = "20 per minute; 100 per day"
    """Mistyped or unknown codes per client IP address: a guesser is stopped
    long before a real code could be found (codes have 95 random bits)."""

    upload_limit: str = "20 per minute; 300 per day"
    """Uploads and share-link checks per client IP address."""

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> VerificationConfig:
        environ = os.environ if environ is None else environ
        readers = {"int": int, "float": float, "str": str}
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = PREFIX + field.name.upper()
            if name not in environ:
                continue
            try:
                values[field.name] = readers[str(field.type)](environ[name])
            except ValueError as error:
                raise SettingsError(f"{name} must be a {field.type} number") from error
        values.update(overrides)
        config = cls(**values)
        if config.max_bytes < 1024 or config.seconds <= 0 or config.workers < 1:
            raise SettingsError(
                f"{PREFIX}MAX_BYTES >= 1024, {PREFIX}SECONDS > 0 and "
                f"{PREFIX}WORKERS >= 1 must hold"
            )
        return config


# -- outcomes --------------------------------------------------------------------------


class VerificationOutcome(enum.StrEnum):
    """The stable answer codes. For files, only ``authentic`` proves the file is
    what the university issued; ``status`` then says whether it still stands."""

    AUTHENTIC = "authentic"
    """File: the university's signature, intact, covering the whole file (or
    followed only by long-term validation data), and registered."""

    NOT_REGISTERED = "not_registered"
    """File: the university's intact signature, but no issuance has this
    content: not a transcript the registry knows."""

    TAMPERED = "tampered"
    """File: signed bytes were changed; the signature no longer matches. Also a
    file another program re-wrote whole (its ``coverage`` check fails too)."""

    CHANGED_AFTER_SIGNING = "changed_after_signing"
    """File: a later revision adds content the signature does not allow (a
    page, text, annotations), e.g. re-saved with changes by another program."""

    UNSIGNED = "unsigned"
    """File: a readable PDF with no signature (a scan, a print to PDF), or with
    only the leftovers of one that no longer fits it (pages copied into a new
    file by another program)."""

    UNTRUSTED_SIGNER = "untrusted_signer"
    """File: an intact signature by someone whose certificate does not chain
    to the university's trust roots."""

    SIGNATURE_INVALID = "signature_invalid"
    """File: the university's chain, but a check failed (a revoked signer
    certificate, a bad timestamp)."""

    INDETERMINATE = "indeterminate"
    """File: checks could not be completed; not a finding of forgery."""

    REGISTERED = "registered"
    """Code or share link: the registry holds this issuance; read ``status``."""

    UNKNOWN_CODE = "unknown_code"
    """Code: well-formed but names nothing (answered as a 404 problem)."""


class Way(enum.StrEnum):
    """How a verification came in."""

    FILE = "file"
    CODE = "code"
    LINK = "link"


class Via(enum.StrEnum):
    """Which door it came through."""

    PAGE = "page"
    API = "api"


HEADLINES: dict[VerificationOutcome, LazyString] = {
    VerificationOutcome.AUTHENTIC: lazy_gettext("Authentic transcript"),
    VerificationOutcome.NOT_REGISTERED: lazy_gettext(
        "Signed by the university, but not a registered transcript"
    ),
    VerificationOutcome.TAMPERED: lazy_gettext(
        "Not authentic: the file was changed after signing"
    ),
    VerificationOutcome.CHANGED_AFTER_SIGNING: lazy_gettext(
        "Not authentic: content was added after signing"
    ),
    VerificationOutcome.UNSIGNED: lazy_gettext("This file has no electronic signature"),
    VerificationOutcome.UNTRUSTED_SIGNER: lazy_gettext(
        "Not authentic: signed by someone other than the university"
    ),
    VerificationOutcome.SIGNATURE_INVALID: lazy_gettext(
        "Not authentic: the signature is not valid"
    ),
    VerificationOutcome.INDETERMINATE: lazy_gettext("Could not be fully verified"),
    VerificationOutcome.REGISTERED: lazy_gettext("Registered transcript"),
}

EXPLANATIONS: dict[VerificationOutcome, LazyString] = {
    VerificationOutcome.AUTHENTIC: lazy_gettext(
        "The electronic signature is the university's, the file has not changed "
        "since it was signed, and it is in the university's register of issued "
        "transcripts."
    ),
    VerificationOutcome.NOT_REGISTERED: lazy_gettext(
        "The signature is intact and comes from the university, but no transcript "
        "in the register has exactly this content. Do not rely on it as a "
        "transcript; look up the verification code printed on it instead."
    ),
    VerificationOutcome.TAMPERED: lazy_gettext(
        "The signed content no longer matches its signature: bytes were changed "
        "after the university signed it. Do not rely on this file; ask the "
        "graduate for the original or look up the verification code."
    ),
    VerificationOutcome.CHANGED_AFTER_SIGNING: lazy_gettext(
        "The university's signature covers only part of this file: something was "
        "added afterwards (a page, text or notes), for example when another "
        "program re-saved it. Do not rely on this file; open the registered copy "
        "with the verification code and compare."
    ),
    VerificationOutcome.UNSIGNED: lazy_gettext(
        "A printed and scanned copy, or a file re-made by another program, loses "
        "the signature, so this file cannot prove anything by itself. Look up the "
        "verification code printed on the document to see the registered copy, "
        "or ask the graduate for the original PDF."
    ),
    VerificationOutcome.UNTRUSTED_SIGNER: lazy_gettext(
        "The file is signed, but not with the university's certificate. Anyone "
        "can make a signature of their own; only the university's proves a "
        "transcript genuine."
    ),
    VerificationOutcome.SIGNATURE_INVALID: lazy_gettext(
        "The signature comes from the university's certificates, but a check "
        "failed (see below). Do not rely on this file."
    ),
    VerificationOutcome.INDETERMINATE: lazy_gettext(
        "Some checks could not be completed (see below). This is not a finding "
        "that the file is forged: please try again later, or look up the "
        "verification code printed on the document."
    ),
    VerificationOutcome.REGISTERED: lazy_gettext(
        "This is the copy the university registered under this code. Compare it "
        "with the document you were given: any difference means that document is "
        "not genuine."
    ),
}

STATUS_WORDS: dict[str, LazyString] = {
    "valid": lazy_gettext("valid"),
    "revoked": lazy_gettext("revoked"),
    "superseded": lazy_gettext("superseded"),
    "expired": lazy_gettext("expired"),
}

CHECK_LABELS: dict[str, LazyString] = {
    "integrity": lazy_gettext("Unchanged since signing"),
    "coverage": lazy_gettext("The signature covers the whole file"),
    "issuer": lazy_gettext("Signed with the university's certificate"),
    "timestamp": lazy_gettext("Trusted signing time"),
    "revocation": lazy_gettext("Certificate not revoked when signing"),
    "registry": lazy_gettext("In the register of issued transcripts"),
}

MARK_WORDS: dict[str, LazyString] = {
    CheckOutcome.PASSED.value: lazy_gettext("passed"),
    CheckOutcome.FAILED.value: lazy_gettext("failed"),
    CheckOutcome.UNKNOWN.value: lazy_gettext("not established"),
    CheckOutcome.NOT_APPLICABLE.value: lazy_gettext("not applicable"),
}

_SEVERITY = {
    CheckOutcome.FAILED: 3,
    CheckOutcome.UNKNOWN: 2,
    CheckOutcome.PASSED: 1,
    CheckOutcome.NOT_APPLICABLE: 0,
}


# -- problems --------------------------------------------------------------------------


class NotAPdf(InvalidInput):
    code = "not_a_pdf"
    title = lazy_gettext("Not a valid PDF")

    def __init__(self, reason: str) -> None:
        super().__init__(
            lazy_gettext(
                "This is not a PDF file this service can read. Please upload the "
                "transcript PDF exactly as you received it."
            ),
            reason=reason,
        )
        self.reason = reason


class FileTooLarge(CampusError):
    status = 413
    code = "too_large"
    title = lazy_gettext("The file is too large")

    def __init__(self, limit: int) -> None:
        super().__init__(
            lazy_gettext(
                "Files up to %(megabytes)s MB can be checked; transcripts are far "
                "smaller.",
                megabytes=limit // (1024 * 1024) or 1,
            ),
            max_bytes=limit,
        )


class CheckTimedOut(CampusError):
    status = 422
    code = "verification_timeout"
    title = lazy_gettext("The file could not be checked in time")

    def __init__(self, seconds: float) -> None:
        super().__init__(
            lazy_gettext(
                "Checking this file took longer than %(seconds)s seconds and was "
                "stopped. A transcript the university issued takes far less.",
                seconds=format(seconds, "g"),
            )
        )


class VerificationBusy(CampusError):
    status = 503
    code = "verification_busy"
    title = lazy_gettext("Too many files are being checked; please try again shortly")


class UnknownCode(NotFound):
    code = "unknown_code"
    title = lazy_gettext("No transcript has this code")

    def __init__(self) -> None:
        # The same words for every unknown code: nothing here may help to
        # guess a real one.
        super().__init__(
            lazy_gettext(
                "No transcript has this code. Please compare it with the document, "
                "character by character."
            )
        )


# -- the access log --------------------------------------------------------------------


class VerificationRecord(Base):
    """One answer given: the access log of issuances, and the count of unknown
    codes and of refused files. Nothing identifies the visitor."""

    __tablename__ = "transcript_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    way: Mapped[Way] = mapped_column(str_enum(Way, 8, "verificationway"))
    via: Mapped[Via] = mapped_column(str_enum(Via, 8, "verificationvia"))
    outcome: Mapped[VerificationOutcome] = mapped_column(
        str_enum(VerificationOutcome, length=32)
    )
    issuance_id: Mapped[int | None] = mapped_column(
        ForeignKey("transcript_issuances.id", ondelete="CASCADE"), index=True
    )
    code_digest: Mapped[str | None] = mapped_column(String(16))
    """For an unknown code only: the first 16 hex digits of its SHA-256, so that
    repeated guesses can be counted without keeping what was typed."""


def code_digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def record(
    session: Session,
    *,
    way: Way,
    via: Via,
    outcome: VerificationOutcome,
    now: dt.datetime,
    issuance_id: int | None = None,
    digest: str | None = None,
) -> None:
    session.add(
        VerificationRecord(
            at=now,
            way=way,
            via=via,
            outcome=outcome,
            issuance_id=issuance_id,
            code_digest=digest,
        )
    )
    session.flush()


def access_log(session: Session, issuance_id: int) -> list[VerificationRecord]:
    """Every look-up of one issuance, newest first."""
    return list(
        session.scalars(
            select(VerificationRecord)
            .where(VerificationRecord.issuance_id == issuance_id)
            .order_by(VerificationRecord.at.desc(), VerificationRecord.id.desc())
        )
    )


def counts_since(session: Session, since: dt.datetime) -> dict[str, int]:
    """Answers by outcome since ``since``: ``unknown_code`` is the number of
    unknown codes tried."""
    rows = session.execute(
        select(VerificationRecord.outcome, func.count())
        .where(VerificationRecord.at >= since)
        .group_by(VerificationRecord.outcome)
    )
    return {str(outcome): count for outcome, count in rows}


# -- the answer ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IssuanceFacts:
    """What an answer tells about an issuance, read while the session is open."""

    id: int
    code: str
    document_version: int
    university_zh: str
    university_en: str
    registrar_zh: str
    registrar_en: str
    name_zh: str
    name_en: str
    college_zh: str
    college_en: str
    major_zh: str
    major_en: str
    degree_zh: str
    degree_en: str
    issued_at: dt.datetime
    valid_until: dt.datetime
    status: str
    status_reason: str | None
    status_changed_at: dt.datetime | None

    @classmethod
    def of(
        cls, issuance: registry.Issuance, config: Any, now: dt.datetime
    ) -> IssuanceFacts:
        student = issuance.student
        return cls(
            id=issuance.id,
            code=issuance.code,
            document_version=issuance.document_version,
            university_zh=config.university_zh,
            university_en=config.university_en,
            registrar_zh=config.registrar_zh,
            registrar_en=config.registrar_en,
            name_zh=student.person.name_zh,
            name_en=student.person.name_en,
            college_zh=student.college_zh,
            college_en=student.college_en,
            major_zh=student.major_zh,
            major_en=student.major_en,
            degree_zh=student.degree_zh,
            degree_en=student.degree_en,
            issued_at=issuance.issued_at,
            valid_until=issuance.valid_until,
            status=issuance.effective_status(now),
            status_reason=issuance.status_reason,
            status_changed_at=issuance.status_changed_at,
        )


@dataclasses.dataclass(frozen=True)
class CheckLine:
    """One check as the answer shows it: a mark and a plain label, with the
    validator's technical words kept for the folded details."""

    name: str
    outcome: str
    """``passed``, ``failed``, ``unknown`` or ``not applicable``."""

    detail: str

    @property
    def label(self) -> LazyString:
        return CHECK_LABELS[self.name]

    @property
    def word(self) -> LazyString:
        return MARK_WORDS[self.outcome]


@dataclasses.dataclass(frozen=True)
class Verification:
    outcome: VerificationOutcome
    issuance: IssuanceFacts | None = None
    matched: str | None = None
    """``file`` (the whole file is the registered one) or ``signed_revision``
    (the file starts with it and adds later revisions)."""

    checks: tuple[CheckLine, ...] = ()
    signer: str | None = None
    signed_at: dt.datetime | None = None
    signing_time_source: str | None = None
    level: str | None = None
    summary: str | None = None
    """The validator's bottom line, in its technical English."""

    @property
    def status(self) -> str | None:
        return self.issuance.status if self.issuance else None

    @property
    def reliable(self) -> bool:
        """The one bit an HR system needs: the file (or registered copy) is the
        university's and stands today."""
        return (
            self.outcome
            in (VerificationOutcome.AUTHENTIC, VerificationOutcome.REGISTERED)
            and self.status == "valid"
        )

    @property
    def tone(self) -> str:
        """``good``, ``warn`` or ``bad``: the colour of the answer."""
        if self.reliable:
            return "good"
        if self.outcome in (
            VerificationOutcome.AUTHENTIC,
            VerificationOutcome.REGISTERED,
            VerificationOutcome.INDETERMINATE,
            VerificationOutcome.UNSIGNED,
        ):
            return "warn"
        return "bad"

    @property
    def headline(self) -> LazyString:
        return HEADLINES[self.outcome]

    @property
    def explanation(self) -> LazyString:
        return EXPLANATIONS[self.outcome]

    @property
    def status_sentence(self) -> LazyString | None:
        facts = self.issuance
        if facts is None:
            return None
        changed = _day(facts.status_changed_at or facts.valid_until)
        until = _day(facts.valid_until)
        if facts.status == "revoked":
            return lazy_gettext(
                "The university revoked this transcript on %(date)s: %(reason)s. It "
                "is no longer valid.",
                date=changed,
                reason=facts.status_reason or "",
            )
        if facts.status == "superseded":
            return lazy_gettext(
                "This transcript was replaced by a newer one on %(date)s (%(reason)s). "
                "Please ask the graduate for the current transcript.",
                date=changed,
                reason=facts.status_reason or "",
            )
        if facts.status == "expired":
            return lazy_gettext(
                "This transcript's validity ended on %(date)s. Please ask the "
                "graduate for a newly issued one.",
                date=until,
            )
        return lazy_gettext(
            "The register lists this transcript as valid until %(date)s.", date=until
        )


def _day(moment: dt.datetime) -> str:
    """The calendar day of ``moment`` where the university is (the app's time
    zone), as the registrar's pages show it."""
    return format_datetime(moment, "yyyy-MM-dd")


# -- reading a validation report -------------------------------------------------------


def _worst(checks: list[tuple[CheckOutcome, str]]) -> tuple[str, str]:
    outcome, detail = max(checks, key=lambda pair: _SEVERITY[pair[0]])
    return outcome.value, detail


def check_lines(
    report: ValidationReport, registered: bool | None
) -> tuple[CheckLine, ...]:
    """The validator's checks folded into the six an employer reads: the first
    signature's, worsened by any document timestamp's."""
    signatures = [s for s in report.signatures if s.kind != "document timestamp"]
    if not signatures:
        return ()
    first = signatures[0]
    stamps = [s for s in report.signatures if s.kind == "document timestamp"]

    def line(name: str, pairs: list[tuple[CheckOutcome, str]]) -> CheckLine:
        outcome, detail = _worst(pairs)
        return CheckLine(name, outcome, detail)

    def pairs(reports: list[SignatureReport], attribute: str) -> list[Any]:
        return [
            (getattr(r, attribute).outcome, getattr(r, attribute).detail)
            for r in reports
        ]

    everything = [first, *stamps]
    lines = [
        line("integrity", pairs(everything, "intact")),
        line(
            "coverage",
            pairs([first], "modifications") + pairs(everything, "coverage"),
        ),
        line("issuer", pairs([first], "chain")),
        line("timestamp", pairs([first], "timestamp") + pairs(stamps, "chain")),
        line("revocation", pairs([first], "revocation")),
    ]
    if registered is None:
        lines.append(
            CheckLine("registry", CheckOutcome.NOT_APPLICABLE.value, "not looked up")
        )
    elif registered:
        lines.append(
            CheckLine("registry", CheckOutcome.PASSED.value, "found by its SHA-256")
        )
    else:
        lines.append(
            CheckLine(
                "registry",
                CheckOutcome.FAILED.value,
                "no issuance has the SHA-256 of this file or of its signed revision",
            )
        )
    return tuple(lines)


def classify(report: ValidationReport, pdf: bytes) -> VerificationOutcome | None:
    """The outcome the signatures alone decide, or None when they all passed
    and only the registry can tell the rest. ``report`` must parse."""
    regular = [s for s in report.signatures if s.kind != "document timestamp"]
    if not regular:
        # No signature report: the file has none, or the time budget ran out
        # before the first. Only a signature that fits this file can have been
        # cut short; leftovers of one that framed another file's bytes (a
        # program that re-made the file kept the signature's dictionary but
        # not its form field) sign nothing here.
        return (
            VerificationOutcome.INDETERMINATE
            if byte_ranges_fit(pdf)
            else VerificationOutcome.UNSIGNED
        )
    failed = CheckOutcome.FAILED
    everything = report.signatures
    if any(s.intact.outcome is failed for s in everything):
        return VerificationOutcome.TAMPERED
    if any(
        s.modifications.outcome is failed or s.coverage.outcome is failed
        for s in everything
    ):
        return VerificationOutcome.CHANGED_AFTER_SIGNING
    first = regular[0]
    if first.chain.outcome is failed and first.revocation.outcome is not failed:
        return VerificationOutcome.UNTRUSTED_SIGNER
    if any(check.outcome is failed for s in everything for check in s.checks.values()):
        return VerificationOutcome.SIGNATURE_INVALID
    if not report.ok:
        return VerificationOutcome.INDETERMINATE
    return None


_BYTE_RANGE = re.compile(
    rb"/ByteRange\s*\[\s*(\d{1,12})\s+(\d{1,12})\s+(\d{1,12})\s+(\d{1,12})\s*\]"
)


def byte_ranges_fit(pdf: bytes) -> bool | None:
    """Whether every signature byte range written in ``pdf`` leaves out exactly
    one hex string, the signature's own bytes, as in the file that was signed;
    None when there is none to read.

    A program that re-writes a signed file (a "save as", pypdf's ``PdfWriter``)
    moves the objects, so the ranges it copies point at other bytes. A range
    kept inside a compressed object stream is not read here; signers write the
    signature dictionary in clear, to fill in its ``/Contents`` afterwards."""
    found = None
    for match in _BYTE_RANGE.finditer(pdf):
        start, gap_start, gap_end, tail = (int(number) for number in match.groups())
        fits = (
            start == 0
            and 0 < gap_start < gap_end
            and gap_end + tail <= len(pdf)
            and pdf[gap_start : gap_start + 1] == b"<"
            and pdf[gap_end - 1 : gap_end] == b">"
        )
        if not fits:
            return False
        found = True
    return found


def revision_digests(pdf: bytes) -> list[str]:
    """SHA-256 of the whole file, then of each earlier revision, newest first.

    A revision ends at an end-of-file marker; an incremental update appends
    after it, so a registered file that gained later revisions is a prefix of
    what was uploaded."""
    ends = {len(pdf)}
    for marker in re.finditer(rb"%%EOF(\r\n|\r|\n)?", pdf):
        ends.add(marker.start() + 5)
        ends.add(marker.end())
    ordered = sorted(ends, reverse=True)[: MAX_REVISIONS + 1]
    return [hashlib.sha256(pdf[:end]).hexdigest() for end in ordered]


def find_by_revisions(
    session: Session, pdf: bytes
) -> tuple[registry.Issuance | None, str | None]:
    """The issuance whose file this is, or whose file this one starts with."""
    digests = revision_digests(pdf)
    found = {
        issuance.sha256: issuance
        for issuance in session.scalars(
            select(registry.Issuance).where(registry.Issuance.sha256.in_(digests))
        )
    }
    for index, digest in enumerate(digests):
        if digest in found:
            return found[digest], "file" if index == 0 else "signed_revision"
    return None, None


# -- the service the app keeps ---------------------------------------------------------


class VerificationService:
    """Answers for files, codes and share links, for the pages and the API."""

    def __init__(self, app: Flask, config: VerificationConfig) -> None:
        self.app = app
        self.config = config
        self._workers: ValidationWorkers | None = None

    @property
    def workers(self) -> ValidationWorkers:
        """The validation workers, built from the signing service's trust roots
        and limits on first use (which may make the development PKI)."""
        if self._workers is None:
            from signing import signing_service

            signing = signing_service(self.app)
            recipe = signing.validator_recipe(
                max_document_bytes=self.config.max_bytes,
                max_seconds=min(
                    self.config.seconds, signing.config.max_validation_seconds
                ),
                memory_bytes=self.config.worker_memory_mb * 1024 * 1024,
                # A stranger's file must not make us fetch what it names.
                allow_fetching=False,
            )
            self._workers = shared_workers(
                recipe, self.config.workers, self.config.seconds
            )
        return self._workers

    @property
    def transcripts(self) -> registry.TranscriptService:
        return registry.transcript_service(self.app)

    def validate(self, pdf: bytes) -> ValidationReport:
        """The validator's report on untrusted bytes, or a problem."""
        if len(pdf) > self.config.max_bytes:
            raise FileTooLarge(self.config.max_bytes)
        if b"%PDF-" not in pdf[:HEADER_WINDOW]:
            logger.info("verification_not_a_pdf", extra={"reason": "header"})
            raise NotAPdf("header")
        try:
            report = self.workers.validate(pdf)
        except OutOfTime as error:
            raise CheckTimedOut(self.config.seconds) from error
        except Busy as error:
            raise VerificationBusy() from error
        except WorkerFailed as error:
            logger.info("verification_not_a_pdf", extra={"reason": error.detail})
            raise NotAPdf("unreadable") from error
        if not report.parses.ok:
            logger.info(
                "verification_not_a_pdf", extra={"reason": report.parses.detail}
            )
            raise NotAPdf("unreadable")
        return report

    def verify_file(
        self, session: Session, pdf: bytes, *, via: Via, now: dt.datetime
    ) -> Verification:
        """Validate, classify, look up, record: the whole answer to an upload."""
        started = time.monotonic()
        report = self.validate(pdf)
        verification = self._answer(session, report, pdf, now)
        record(
            session,
            way=Way.FILE,
            via=via,
            outcome=verification.outcome,
            now=now,
            issuance_id=verification.issuance.id if verification.issuance else None,
        )
        logger.info(
            "verification_file_answered",
            extra={
                "outcome": verification.outcome.value,
                "issuance": verification.issuance.id if verification.issuance else None,
                "matched": verification.matched,
                "bytes": len(pdf),
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return verification

    def _answer(
        self, session: Session, report: ValidationReport, pdf: bytes, now: dt.datetime
    ) -> Verification:
        outcome = classify(report, pdf)
        issuance = matched = None
        if outcome in (
            None,
            VerificationOutcome.CHANGED_AFTER_SIGNING,
            VerificationOutcome.INDETERMINATE,
        ):
            issuance, matched = find_by_revisions(session, pdf)
        if outcome is None:
            outcome = (
                VerificationOutcome.AUTHENTIC
                if issuance is not None
                else VerificationOutcome.NOT_REGISTERED
            )
        regular = [s for s in report.signatures if s.kind != "document timestamp"]
        first = regular[0] if regular else None
        looked_up = outcome not in (
            VerificationOutcome.TAMPERED,
            VerificationOutcome.UNTRUSTED_SIGNER,
            VerificationOutcome.UNSIGNED,
            VerificationOutcome.SIGNATURE_INVALID,
        )
        return Verification(
            outcome=outcome,
            issuance=(
                IssuanceFacts.of(issuance, self.transcripts.config, now)
                if issuance is not None
                else None
            ),
            matched=matched,
            checks=check_lines(report, (issuance is not None) if looked_up else None),
            signer=first.signer if first else None,
            signed_at=first.signing_time if first else None,
            signing_time_source=first.signing_time_source if first else None,
            level=first.level if first else None,
            summary=report.summary,
        )

    def look_up_code(
        self, session: Session, typed: str, *, via: Via, now: dt.datetime
    ) -> tuple[Verification, registry.Issuance]:
        """The registered issuance of a typed code, recorded in its access log;
        ``MalformedCode`` before any query for a typo, ``UnknownCode`` after."""
        try:
            canonical = codes.normalise(typed)
        except codes.MalformedCode as error:
            logger.info("verification_code_malformed", extra={"reason": error.reason})
            raise
        issuance = registry.find_by_code(session, canonical)
        if issuance is None:
            digest = code_digest(canonical)
            record(
                session,
                way=Way.CODE,
                via=via,
                outcome=VerificationOutcome.UNKNOWN_CODE,
                now=now,
                digest=digest,
            )
            logger.warning("verification_code_unknown", extra={"code_digest": digest})
            raise UnknownCode()
        record(
            session,
            way=Way.CODE,
            via=via,
            outcome=VerificationOutcome.REGISTERED,
            now=now,
            issuance_id=issuance.id,
        )
        logger.info("verification_code_found", extra={"issuance": issuance.id})
        verification = Verification(
            outcome=VerificationOutcome.REGISTERED,
            issuance=IssuanceFacts.of(issuance, self.transcripts.config, now),
            matched="file",
        )
        return verification, issuance

    def registered_copy(self, issuance: registry.Issuance) -> bytes:
        return registry.stored_file(issuance, self.transcripts)

    def verify_link(
        self, session: Session, token: str, *, via: Via, now: dt.datetime
    ) -> Verification:
        """Check the file a share link offers, as if the visitor had uploaded
        it, and log the check for the graduate (``LinkEventKind.VERIFIED``, its
        detail the outcome). ``LinkUnavailable`` when the link may not be used;
        the refusal is logged for the graduate by ``sharing.open_link``."""
        link = sharing.open_link(session, token, now, sharing.LinkEventKind.VERIFIED)
        pdf = self.registered_copy(link.issuance)
        report = self.validate(pdf)
        verification = self._answer(session, report, pdf, now)
        _describe_last_verified(session, link, verification.outcome.value)
        record(
            session,
            way=Way.LINK,
            via=via,
            outcome=verification.outcome,
            now=now,
            issuance_id=link.issuance_id,
        )
        logger.info(
            "verification_link_answered",
            extra={
                "link": link.id,
                "issuance": link.issuance_id,
                "outcome": verification.outcome.value,
            },
        )
        return verification


def _describe_last_verified(
    session: Session, link: sharing.ShareLink, detail: str
) -> None:
    """Put the answer on the ``verified`` event ``open_link`` just wrote, so
    that the graduate reads what the check found."""
    event = session.scalar(
        select(sharing.ShareLinkEvent)
        .where(
            sharing.ShareLinkEvent.link_id == link.id,
            sharing.ShareLinkEvent.kind == sharing.LinkEventKind.VERIFIED,
        )
        .order_by(sharing.ShareLinkEvent.id.desc())
        .limit(1)
    )
    if event is not None:
        event.detail = detail
        session.flush()


def verification_service(app: Flask | None = None) -> VerificationService:
    return (app or current_app).extensions[EXTENSION]  # type: ignore[no-any-return]


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = VerificationService(
        app, VerificationConfig.from_environ()
    )
