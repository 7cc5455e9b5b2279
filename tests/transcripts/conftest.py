"""Builders of real records, and one signed transcript shared by the PDF tests.

Issuing is the expensive step (layout ~0.3 s, B-LTA signature ~0.3 s), so the
tests that only read a finished file share one, made once per session in its own
app and then removed from the database like any test's rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from campus.people import Person, PersonKind
from transcripts.records import (
    Course,
    CourseCategory,
    ExamKind,
    Gender,
    GradeEntry,
    Programme,
    StudentRecord,
    StudyStatus,
)

NOW = dt.datetime(2026, 7, 10, 2, 0, tzinfo=dt.UTC)


def pdf_form(pdf: bytes, name: str = "transcript.pdf") -> dict[str, Any]:
    """Keyword arguments for a test client's POST of one PDF as the form's
    ``file``.

    Encoded in memory: given a file, werkzeug's test client spools a body over
    500 KB to a temporary file that it never closes, and the ResourceWarning
    then fails whichever test the collector happens to run in.
    """
    upload = FileStorage(io.BytesIO(pdf), filename=name, content_type="application/pdf")
    boundary, body = encode_multipart({"file": upload})
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


_numbers = itertools.count(1)

CHINESE_COURSES = [
    ("MA101", "高等数学（上）", "Advanced Mathematics I", "5", CourseCategory.REQUIRED),
    ("CS201", "数据结构与算法", "Data Structures and Algorithms", "4",
     CourseCategory.REQUIRED),
    ("GE102", "中国近现代史纲要", "Outline of Modern Chinese History", "3",
     CourseCategory.GENERAL),
    ("EL301", "书法鉴赏", "Appreciation of Chinese Calligraphy", "2",
     CourseCategory.ELECTIVE),
]  # fmt: skip


def make_student(
    session: Session,
    *,
    number: str | None = None,
    name_zh: str = "欧阳娜娜",
    name_en: str = "Nana Ouyang",
    college_zh: str = "计算机学院",
    graduated: bool = True,
    year: int = 2026,
) -> StudentRecord:
    number = number or f"2099{next(_numbers):06d}"
    person = Person(
        number=number, kind=PersonKind.STUDENT, name_zh=name_zh, name_en=name_en
    )
    record = StudentRecord(
        person=person,
        gender=Gender.FEMALE,
        birth_date=dt.date(2004, 3, 8),
        college_zh=college_zh,
        college_en="School of Computer Science",
        major_zh="软件工程",
        major_en="Software Engineering",
        programme=Programme.UNDERGRADUATE,
        degree_zh="工学学士" if graduated else "",
        degree_en="Bachelor of Engineering" if graduated else "",
        enrolled_on=dt.date(year - 4, 9, 1),
        graduated_on=dt.date(year, 6, 30) if graduated else None,
        status=StudyStatus.GRADUATED if graduated else StudyStatus.ENROLLED,
    )
    session.add(record)
    session.flush()
    return record


def course(session: Session, code: str, zh: str, en: str, credits: str,
           category: CourseCategory) -> Course:  # fmt: skip
    existing = session.query(Course).filter_by(code=code).one_or_none()
    if existing is not None:
        return existing
    made = Course(
        code=code, name_zh=zh, name_en=en, credits=Decimal(credits), category=category
    )
    session.add(made)
    session.flush()
    return made


def grade(
    session: Session,
    student: StudentRecord,
    subject: Course,
    term: str,
    *,
    score: str | None = None,
    mark: str | None = None,
    kind: ExamKind = ExamKind.REGULAR,
    passed: bool | None = None,
) -> GradeEntry:
    entry = GradeEntry(
        student_id=student.id,
        course_id=subject.id,
        term=term,
        score=None if score is None else Decimal(score),
        grade=mark,
        exam_kind=kind,
        passed=passed
        if passed is not None
        else (score is None or Decimal(score) >= 60),
    )
    session.add(entry)
    session.flush()
    return entry


def give_grades(session: Session, student: StudentRecord, terms: int = 8) -> None:
    """A realistic record: four courses a term for ``terms`` terms, one failed
    and retaken, one passed at the make-up examination, one level grade."""
    for term_index in range(terms):
        year = 2022 + term_index // 2
        term = f"{year}-{year + 1}-{term_index % 2 + 1}"
        for index, (code, zh, en, credits, category) in enumerate(CHINESE_COURSES):
            subject = course(session, f"{code}{term_index}", zh, en, credits, category)
            if index == 3:
                grade(session, student, subject, term, mark="优秀")
            elif term_index == 1 and index == 0:
                grade(session, student, subject, term, score="48")
                grade(session, student, subject, term, score="75", kind=ExamKind.MAKEUP)
            elif term_index == 2 and index == 1:
                grade(session, student, subject, term, score="55")
                later = f"{year + 1}-{year + 2}-1"
                grade(
                    session, student, subject, later, score="88", kind=ExamKind.RETAKE
                )
            else:
                grade(
                    session,
                    student,
                    subject,
                    term,
                    score=str(70 + 3 * index + term_index),
                )


@dataclasses.dataclass(frozen=True)
class IssuedFile:
    pdf: bytes
    code: str
    records: dict[str, Any]
    """What the database held, read back independently of the layout."""


@pytest.fixture(scope="session")
def issued_file(settings_factory) -> IssuedFile:  # type: ignore[no-untyped-def]
    """One real issuance of a long record (several pages), signed at B-LTA."""
    from campus import create_app
    from campus.database import db
    from tests.conftest import empty_tables
    from transcripts import registry

    app = create_app(settings_factory())
    with app.app_context():
        session = db.session()
        student = make_student(session, name_zh="欧阳娜娜", name_en="Nana Ouyang")
        give_grades(session, student)
        session.commit()
        records = {
            "number": student.person.number,
            "grades": sorted(
                (e.course.code, e.course.name_zh, e.term, e.exam_kind.value, e.mark)
                for e in student.grades
            ),
        }
        issuance = registry.issue(session, student, actor="test", now=NOW)
        session.commit()
        pdf = registry.stored_file(issuance)
        code = issuance.code
        db.session.remove()
    empty_tables(db.engine)
    return IssuedFile(pdf, code, records)


@pytest.fixture(scope="session")
def settings_factory(database_url, instance_path, engine):  # type: ignore[no-untyped-def]
    from campus.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mode": "development",
            "instance_path": instance_path,
            "database_url": database_url,
            "scheduler": False,
            "base_url": "http://localhost",
        }
        values.update(overrides)
        return Settings(**values)

    return make


# -- verification: the session's signed file, registered afresh per test ------------


@pytest.fixture
def register_issued(session, issued_file):  # type: ignore[no-untyped-def]
    """Register the session's signed transcript in this test's database (the
    tables are emptied after every test) through ``registry.register``, as
    issuing does after signing, without signing again."""
    from campus.database import utcnow
    from transcripts import registry

    def register(valid_until: dt.datetime | None = None) -> Any:
        student = make_student(session, name_zh="欧阳娜娜", name_en="Nana Ouyang")
        service = registry.transcript_service()
        prepared = registry.PreparedIssuance(
            student_id=student.id,
            data={
                "issuance": {
                    "document_version": 1,
                    "verification_code": issued_file.code,
                }
            },
            signed=issued_file.pdf,
            level="B-LTA",
            storage_key=service.storage.put(issued_file.pdf),
            issued_at=NOW,
            valid_until=valid_until or utcnow() + dt.timedelta(days=365),
        )
        issuance = registry.register(session, prepared, actor="test")
        session.commit()
        return issuance

    return register


@dataclasses.dataclass(frozen=True)
class VerificationFiles:
    """What an employer might be handed, made once per session from the
    session's signed transcript."""

    genuine: bytes
    one_byte_changed: bytes
    page_added: bytes
    """A new page appended by an incremental update after signing."""

    unsigned: bytes
    """What a printer-and-scanner or a "print to PDF" gives back."""

    signed_by_a_stranger: bytes
    """Signed by another CA with the same layout and names as ours."""


def change_one_signed_byte(pdf: bytes) -> bytes:
    """Flip one byte inside the first stream of the signed revision: the file
    still parses, but its signed digest no longer matches."""
    start = pdf.index(b"stream", pdf.index(b" obj")) + len(b"stream\n") + 16
    changed = bytearray(pdf)
    changed[start] ^= 0x01
    return bytes(changed)


@pytest.fixture(scope="session")
def verification_files(issued_file, tmp_path_factory) -> VerificationFiles:  # type: ignore[no-untyped-def]
    from signing.config import Level, SigningConfig
    from signing.devpki import DevelopmentPKI, ensure_served, stop_serving
    from signing.service import SigningService
    from tests.signing.conftest import make_pdf
    from tests.signing.tampering import add_page

    folder = tmp_path_factory.mktemp("stranger")
    stranger = DevelopmentPKI.ensure(folder / "dev-pki")
    ensure_served(stranger)
    try:
        service = SigningService(
            SigningConfig(dev_pki_path=stranger.path), folder / "instance"
        )
        foreign = service.sign(make_pdf(), level=Level.B_T)
    finally:
        stop_serving(stranger)
    return VerificationFiles(
        genuine=issued_file.pdf,
        one_byte_changed=change_one_signed_byte(issued_file.pdf),
        page_added=add_page(issued_file.pdf),
        unsigned=make_pdf(),
        signed_by_a_stranger=foreign,
    )
