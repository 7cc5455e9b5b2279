"""Academic records: a student's academic details, courses, and grade entries.

A ``StudentRecord`` hangs on a ``campus.people.Person`` (the identity payments
shares) and holds what the academic affairs system knows about the student's
studies. A ``GradeEntry`` is one attempt at one course in one term: the regular
examination, a make-up examination (补考) or a retake (重修). Records arrive by
import (``transcripts.importing``) and are read by the GPA calculation and the
transcript layout; nothing here computes anything.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Numeric,
    String,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from campus.database import Base, str_enum, utcnow
from campus.people import Person


class Gender(enum.StrEnum):
    """As the academic affairs system records it."""

    MALE = "male"
    FEMALE = "female"
    UNSTATED = "unstated"


class Programme(enum.StrEnum):
    """The level of study."""

    UNDERGRADUATE = "undergraduate"
    """本科: four (or five) years, bachelor's degree."""

    MASTER = "master"
    """硕士研究生."""

    DOCTORATE = "doctorate"
    """博士研究生."""


class StudyStatus(enum.StrEnum):
    """Where the student stands (学籍状态)."""

    ENROLLED = "enrolled"
    """Studying now; a transcript shows the courses so far."""

    GRADUATED = "graduated"
    """Finished with a graduation date; the usual subject of a transcript."""

    SUSPENDED = "suspended"
    """休学: studies paused; records kept."""

    WITHDRAWN = "withdrawn"
    """退学: left without graduating; a transcript still lists what was passed."""


class CourseCategory(enum.StrEnum):
    """课程性质."""

    REQUIRED = "required"
    """必修."""

    ELECTIVE = "elective"
    """选修."""

    GENERAL = "general"
    """通识 / 公共课."""

    PRACTICE = "practice"
    """实践 (internships, theses, lab projects)."""


class ExamKind(enum.StrEnum):
    """考试性质: which attempt a grade entry records."""

    REGULAR = "regular"
    """正常考试: the first examination at the end of the course."""

    MAKEUP = "makeup"
    """补考: a second examination after failing, without retaking the course."""

    RETAKE = "retake"
    """重修: the course taken again in a later term."""


class StudentRecord(Base):
    """A student's academic details; one per person."""

    __tablename__ = "transcript_students"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(
        ForeignKey("people.id", ondelete="RESTRICT"), unique=True
    )
    gender: Mapped[Gender] = mapped_column(str_enum(Gender))
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    college_zh: Mapped[str] = mapped_column(String(128))
    college_en: Mapped[str] = mapped_column(String(128))
    major_zh: Mapped[str] = mapped_column(String(128))
    major_en: Mapped[str] = mapped_column(String(128))
    programme: Mapped[Programme] = mapped_column(str_enum(Programme))
    degree_zh: Mapped[str] = mapped_column(String(64), default="")
    """The degree conferred (e.g. 工学学士), empty until conferred."""
    degree_en: Mapped[str] = mapped_column(String(128), default="")
    enrolled_on: Mapped[dt.date] = mapped_column(Date)
    graduated_on: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[StudyStatus] = mapped_column(str_enum(StudyStatus))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    person: Mapped[Person] = relationship(lazy="joined")
    grades: Mapped[list[GradeEntry]] = relationship(
        back_populates="student", cascade="all, delete-orphan"
    )

    @property
    def number(self) -> str:
        return self.person.number

    def __repr__(self) -> str:
        return f"<StudentRecord {self.person.number}>"


class Course(Base):
    """A course as the academic affairs system catalogues it."""

    __tablename__ = "transcript_courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(256))
    credits: Mapped[Decimal] = mapped_column(Numeric(4, 1))
    category: Mapped[CourseCategory] = mapped_column(str_enum(CourseCategory))

    def __repr__(self) -> str:
        return f"<Course {self.code}>"


class GradeEntry(Base):
    """One attempt at one course in one term.

    ``score`` is a percentage mark (百分制) when the course was marked that way;
    ``grade`` is the level or letter given instead (优秀, 良好, B+, 合格); at least
    one of them is set. ``grade_points`` is what the academic affairs system
    computed, kept for the ``recorded`` scale; other scales recompute it.
    """

    __tablename__ = "transcript_grades"
    __table_args__ = (UniqueConstraint("student_id", "course_id", "term", "exam_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_students.id", ondelete="CASCADE"), index=True
    )
    course_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_courses.id", ondelete="RESTRICT")
    )
    term: Mapped[str] = mapped_column(String(16))
    """``2023-2024-1``: academic year and term number, as Chinese systems write
    it; sorts in time order."""
    score: Mapped[Decimal | None] = mapped_column(Numeric(5, 1))
    grade: Mapped[str | None] = mapped_column(String(16))
    grade_points: Mapped[Decimal | None] = mapped_column(Numeric(3, 2))
    exam_kind: Mapped[ExamKind] = mapped_column(str_enum(ExamKind))
    passed: Mapped[bool] = mapped_column(Boolean)

    student: Mapped[StudentRecord] = relationship(back_populates="grades")
    course: Mapped[Course] = relationship(lazy="joined")

    @property
    def mark(self) -> str:
        """The mark as printed: the score without a needless ``.0``, or the
        grade."""
        if self.score is not None:
            return format_score(self.score)
        return self.grade or ""


def format_score(score: Decimal) -> str:
    return f"{score:.0f}" if score == score.to_integral_value() else f"{score:.1f}"


def record_for_person(session: Session, person: Person) -> StudentRecord | None:
    return session.scalar(
        select(StudentRecord).where(StudentRecord.person_id == person.id)
    )


def record_by_number(session: Session, number: str) -> StudentRecord | None:
    return session.scalar(
        select(StudentRecord).join(Person).where(Person.number == number)
    )


def grades_of(session: Session, student: StudentRecord) -> list[GradeEntry]:
    """The student's grade entries in term order, then course code, then attempt
    kind (regular before make-up before retake)."""
    entries = session.scalars(
        select(GradeEntry).where(GradeEntry.student_id == student.id)
    ).all()
    order = {kind: index for index, kind in enumerate(ExamKind)}
    return sorted(entries, key=lambda e: (e.term, e.course.code, order[e.exam_kind]))
