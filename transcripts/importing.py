"""Import students and grades from the CSV and Excel files an academic affairs
system exports.

Two kinds of file: ``students`` (one row per student: 学籍) and ``grades`` (one row
per attempt at a course, with the course's own columns repeated: 成绩). A
``ColumnMapping`` says which header holds which field; the defaults are the usual
Chinese headers, and English field names are accepted as headers too.

A file imports all or nothing: every row is checked first, and any bad row (or a
missing column) rejects the whole file with a report of every problem, its line
number and its reason. A good file is written in one transaction, inserting what
is new, updating what changed and leaving the rest; importing the same file twice
changes nothing the second time.

Errors::

    campus.errors.InvalidInput
    └── ImportRejected     the file was refused; ``report.problems`` lists why
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from flask_babel import lazy_gettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from campus.errors import InvalidInput
from campus.people import Person, PersonKind, find_person
from transcripts.gpa import PASS_MARK, UnknownMark, is_pass_fail, mark_equivalent
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

logger = logging.getLogger(__name__)

KINDS = ("students", "grades")

STUDENT_FIELDS: dict[str, tuple[str, bool]] = {
    # field: (default header, required)
    "number": ("学号", True),
    "name_zh": ("姓名", True),
    "name_en": ("英文姓名", True),
    "gender": ("性别", True),
    "birth_date": ("出生日期", False),
    "college_zh": ("学院", True),
    "college_en": ("学院英文名", True),
    "major_zh": ("专业", True),
    "major_en": ("专业英文名", True),
    "programme": ("培养层次", True),
    "degree_zh": ("学位", False),
    "degree_en": ("学位英文名", False),
    "enrolled_on": ("入学日期", True),
    "graduated_on": ("毕业日期", False),
    "status": ("学籍状态", True),
}

GRADE_FIELDS: dict[str, tuple[str, bool]] = {
    "number": ("学号", True),
    "course_code": ("课程代码", True),
    "course_name_zh": ("课程名称", True),
    "course_name_en": ("课程英文名称", True),
    "credits": ("学分", True),
    "category": ("课程性质", True),
    "term": ("学年学期", True),
    "score": ("成绩", False),
    "grade": ("等级", False),
    "grade_points": ("绩点", False),
    "exam_kind": ("考试性质", True),
    "passed": ("是否及格", False),
}

FIELDS = {"students": STUDENT_FIELDS, "grades": GRADE_FIELDS}

VOCABULARY: dict[str, dict[str, Any]] = {
    "gender": {
        "男": Gender.MALE, "女": Gender.FEMALE, "m": Gender.MALE, "f": Gender.FEMALE,
        "male": Gender.MALE, "female": Gender.FEMALE, "未说明": Gender.UNSTATED,
        "unstated": Gender.UNSTATED,
    },
    "programme": {
        "本科": Programme.UNDERGRADUATE, "undergraduate": Programme.UNDERGRADUATE,
        "硕士": Programme.MASTER, "硕士研究生": Programme.MASTER,
        "master": Programme.MASTER, "博士": Programme.DOCTORATE,
        "博士研究生": Programme.DOCTORATE, "doctorate": Programme.DOCTORATE,
    },
    "status": {
        "在读": StudyStatus.ENROLLED, "在校": StudyStatus.ENROLLED,
        "enrolled": StudyStatus.ENROLLED, "毕业": StudyStatus.GRADUATED,
        "已毕业": StudyStatus.GRADUATED, "graduated": StudyStatus.GRADUATED,
        "休学": StudyStatus.SUSPENDED, "suspended": StudyStatus.SUSPENDED,
        "退学": StudyStatus.WITHDRAWN, "withdrawn": StudyStatus.WITHDRAWN,
    },
    "category": {
        "必修": CourseCategory.REQUIRED, "必修课": CourseCategory.REQUIRED,
        "required": CourseCategory.REQUIRED, "选修": CourseCategory.ELECTIVE,
        "选修课": CourseCategory.ELECTIVE, "任选": CourseCategory.ELECTIVE,
        "限选": CourseCategory.ELECTIVE, "elective": CourseCategory.ELECTIVE,
        "通识": CourseCategory.GENERAL, "通识课": CourseCategory.GENERAL,
        "公共课": CourseCategory.GENERAL, "公共基础": CourseCategory.GENERAL,
        "general": CourseCategory.GENERAL, "实践": CourseCategory.PRACTICE,
        "实践环节": CourseCategory.PRACTICE, "practice": CourseCategory.PRACTICE,
    },
    "exam_kind": {
        "正常考试": ExamKind.REGULAR, "正常": ExamKind.REGULAR,
        "初修": ExamKind.REGULAR, "regular": ExamKind.REGULAR, "补考": ExamKind.MAKEUP,
        "makeup": ExamKind.MAKEUP, "make-up": ExamKind.MAKEUP,
        "重修": ExamKind.RETAKE, "retake": ExamKind.RETAKE,
    },
    "passed": {
        "是": True, "否": False, "y": True, "n": False, "yes": True, "no": False,
        "true": True, "false": False, "1": True, "0": False, "及格": True,
        "不及格": False,
    },
}  # fmt: skip

TERM = re.compile(r"^(\d{4})-(\d{4})-([123])$")
NUMBER = re.compile(r"^[0-9A-Za-z]{4,32}$")
COURSE_CODE = re.compile(r"^[0-9A-Za-z._-]{1,32}$")


class ImportRejected(InvalidInput):
    code = "import_rejected"
    title = lazy_gettext("The file was not imported")

    def __init__(self, report: ImportReport) -> None:
        super().__init__(
            lazy_gettext(
                "The file has %(count)s problems; nothing was imported.",
                count=len(report.problems),
            ),
            problems=[problem.as_dict() for problem in report.problems],
        )
        self.report = report


@dataclasses.dataclass(frozen=True)
class Problem:
    line: int
    """The file's line (CSV) or row (Excel) number, the header being 1."""
    column: str
    """The file's header of the offending column, or empty for the whole row."""
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "reason": self.reason}

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


@dataclasses.dataclass
class ImportReport:
    kind: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "problems": [problem.as_dict() for problem in self.problems],
        }


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """Which file header holds each field."""

    headers: Mapping[str, str]

    @classmethod
    def default(cls, kind: str) -> ColumnMapping:
        return cls({field: header for field, (header, _) in FIELDS[kind].items()})

    @classmethod
    def parse(cls, kind: str, text: str | Mapping[str, str] | None) -> ColumnMapping:
        """The defaults with ``text`` on top: a JSON object or ``field=Header``
        pairs separated by commas or new lines."""
        headers = dict(cls.default(kind).headers)
        if not text:
            return cls(headers)
        if isinstance(text, Mapping):
            given = dict(text)
        elif text.strip().startswith("{"):
            given = json.loads(text)
        else:
            given = {}
            for pair in re.split(r"[,\n]", text):
                if pair.strip():
                    field, _, header = pair.partition("=")
                    given[field.strip()] = header.strip()
        unknown = sorted(set(given) - set(FIELDS[kind]))
        if unknown:
            raise InvalidInput(
                lazy_gettext(
                    "Unknown fields in the column mapping: %(fields)s",
                    fields=", ".join(unknown),
                )
            )
        headers.update({key: str(value) for key, value in given.items()})
        return cls(headers)

    def locate(
        self, kind: str, header_row: list[str]
    ) -> tuple[dict[str, int], list[Problem]]:
        """Column index of each mapped field in ``header_row``; a problem for
        each required field whose column is missing. A field's own English name
        is accepted as its header too."""
        positions = {name.strip(): index for index, name in enumerate(header_row)}
        found: dict[str, int] = {}
        problems = []
        for field, (_, required) in FIELDS[kind].items():
            header = self.headers[field]
            index = positions.get(header, positions.get(field))
            if index is not None:
                found[field] = index
            elif required:
                problems.append(
                    Problem(1, header, str(lazy_gettext("required column is missing")))
                )
        return found, problems


# -- reading files -------------------------------------------------------------------


def read_rows(data: bytes, filename: str) -> Iterator[tuple[int, list[Any]]]:
    """``(line number, cells)`` of a CSV or Excel file, header included."""
    if filename.lower().endswith((".xlsx", ".xlsm")):
        yield from _excel_rows(data)
    else:
        yield from _csv_rows(data)


def _csv_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    # Academic affairs systems export UTF-8 (often with a BOM) or, the older
    # ones, GBK; GB 18030 reads both GBK and everything else.
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("gb18030")
    reader = csv.reader(io.StringIO(text, newline=""))
    for cells in reader:
        # ``line_num`` counts physical lines, so a quoted cell with a line break
        # still reports the line where its row ends, as a text editor shows it.
        yield reader.line_num, cells


def _excel_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    from openpyxl import load_workbook

    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        for number, cells in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, list(cells)
    finally:
        workbook.close()


# -- checking cells --------------------------------------------------------------------


class _Bad(ValueError):
    pass


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        # Excel keeps numbers as floats; a student number 2023000001 must not
        # become "2023000001.0".
        return str(int(value))
    return str(value).strip()


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = _text(value)
    if not text:
        return None
    for pattern in ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, pattern).date()  # noqa: DTZ007
        except ValueError:
            continue
    raise _Bad(lazy_gettext("not a date (write 2023-09-01)"))


def _decimal(value: Any, low: Decimal, high: Decimal, places: int) -> Decimal | None:
    text = _text(value)
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation as error:
        raise _Bad(lazy_gettext("not a number")) from error
    if not number.is_finite() or not low <= number <= high:
        raise _Bad(
            lazy_gettext("must be between %(low)s and %(high)s", low=low, high=high)
        )
    quantum = Decimal(1).scaleb(-places)
    if number != number.quantize(quantum):
        raise _Bad(lazy_gettext("too many decimal places"))
    return number.quantize(quantum)


def _choice(field: str, value: Any) -> Any:
    text = _text(value)
    vocabulary = VOCABULARY[field]
    found = vocabulary.get(text, vocabulary.get(text.lower()))
    if found is None:
        raise _Bad(lazy_gettext("unknown value %(value)r", value=text))
    return found


class _Row:
    """The cells of one row, read by field name, collecting problems."""

    def __init__(
        self,
        line: int,
        cells: list[Any],
        positions: dict[str, int],
        mapping: ColumnMapping,
    ) -> None:
        self.line = line
        self.cells = cells
        self.positions = positions
        self.mapping = mapping
        self.problems: list[Problem] = []

    def raw(self, field: str) -> Any:
        index = self.positions.get(field)
        if index is None or index >= len(self.cells):
            return None
        return self.cells[index]

    def get(self, field: str, convert: Any = _text, required: bool = False) -> Any:
        try:
            value = convert(self.raw(field))
        except _Bad as bad:
            self.fail(field, str(bad))
            return None
        if required and value in (None, ""):
            self.fail(field, str(lazy_gettext("must not be empty")))
        return value

    def fail(self, field: str, reason: str) -> None:
        header = self.mapping.headers.get(field, field) if field else ""
        self.problems.append(Problem(self.line, header, reason))


def _student_values(row: _Row) -> dict[str, Any]:
    values = {
        "number": row.get("number", required=True),
        "name_zh": row.get("name_zh", required=True),
        "name_en": row.get("name_en", required=True),
        "gender": row.get("gender", lambda v: _choice("gender", v)),
        "birth_date": row.get("birth_date", _date),
        "college_zh": row.get("college_zh", required=True),
        "college_en": row.get("college_en", required=True),
        "major_zh": row.get("major_zh", required=True),
        "major_en": row.get("major_en", required=True),
        "programme": row.get("programme", lambda v: _choice("programme", v)),
        "degree_zh": row.get("degree_zh"),
        "degree_en": row.get("degree_en"),
        "enrolled_on": row.get("enrolled_on", _date, required=True),
        "graduated_on": row.get("graduated_on", _date),
        "status": row.get("status", lambda v: _choice("status", v)),
    }
    if values["number"] and not NUMBER.match(values["number"]):
        row.fail("number", str(lazy_gettext("not a student number")))
    if values["status"] is StudyStatus.GRADUATED and not values["graduated_on"]:
        row.fail(
            "graduated_on", str(lazy_gettext("a graduate needs a graduation date"))
        )
    if (
        values["graduated_on"]
        and values["enrolled_on"]
        and values["graduated_on"] <= values["enrolled_on"]
    ):
        row.fail("graduated_on", str(lazy_gettext("graduation is before enrolment")))
    return values


def _grade_values(row: _Row) -> dict[str, Any]:
    values = {
        "number": row.get("number", required=True),
        "course_code": row.get("course_code", required=True),
        "course_name_zh": row.get("course_name_zh", required=True),
        "course_name_en": row.get("course_name_en", required=True),
        "credits": row.get(
            "credits",
            lambda v: _decimal(v, Decimal("0.5"), Decimal(30), 1),
            required=True,
        ),
        "category": row.get("category", lambda v: _choice("category", v)),
        "term": row.get("term", required=True),
        "score": row.get("score", lambda v: _decimal(v, Decimal(0), Decimal(100), 1)),
        "grade": row.get("grade") or None,
        "grade_points": row.get(
            "grade_points", lambda v: _decimal(v, Decimal(0), Decimal(5), 2)
        ),
        "exam_kind": row.get("exam_kind", lambda v: _choice("exam_kind", v)),
        "passed": row.get(
            "passed", lambda v: _choice("passed", v) if _text(v) else None
        ),
    }
    if values["course_code"] and not COURSE_CODE.match(values["course_code"]):
        row.fail("course_code", str(lazy_gettext("not a course code")))
    term = TERM.match(values["term"] or "")
    if values["term"] and (term is None or int(term[2]) != int(term[1]) + 1):
        row.fail("term", str(lazy_gettext("not a term (write 2023-2024-1)")))
    if values["score"] is None and values["grade"] is None:
        if not any(p.column == row.mapping.headers["score"] for p in row.problems):
            row.fail("score", str(lazy_gettext("needs a score or a grade")))
    elif values["score"] is None:
        try:
            mark_equivalent(None, values["grade"])
        except UnknownMark:
            row.fail("grade", str(lazy_gettext("unknown grade")))
    if values["passed"] is None and not row.problems:
        values["passed"] = _passed_from_mark(values["score"], values["grade"])
    return values


def _passed_from_mark(score: Decimal | None, grade: str | None) -> bool:
    if score is not None:
        return score >= PASS_MARK
    if is_pass_fail(grade):
        return (grade or "").strip().upper() in {"合格", "通过", "P", "PASSED"}
    mark = mark_equivalent(None, grade)
    return mark is not None and mark >= PASS_MARK


# -- importing ------------------------------------------------------------------------


def import_file(
    session: Session,
    kind: str,
    data: bytes,
    filename: str,
    mapping: ColumnMapping | None = None,
    actor: str = "system",
) -> ImportReport:
    """Check every row of the file, then write all of it, or raise
    ``ImportRejected`` having written nothing. The caller commits."""
    if kind not in KINDS:
        raise InvalidInput(lazy_gettext("Unknown kind of import: %(kind)s", kind=kind))
    mapping = mapping or ColumnMapping.default(kind)
    report = ImportReport(kind)
    try:
        rows = list(read_rows(data, filename))
    except Exception as error:  # noqa: BLE001 - any unreadable file is one answer
        # csv, openpyxl and zipfile raise a dozen unrelated types for a file that
        # is not what it says; each means the same to the registrar.
        report.problems.append(
            Problem(0, "", str(lazy_gettext("the file cannot be read")))
        )
        logger.warning("import_unreadable", extra={"kind": kind, "error": str(error)})
        raise ImportRejected(report) from error
    if not rows:
        report.problems.append(Problem(0, "", str(lazy_gettext("the file is empty"))))
        raise ImportRejected(report)

    header_line, header = rows[0]
    positions, missing = mapping.locate(kind, [_text(cell) for cell in header])
    if missing:
        report.problems.extend(missing)
        raise ImportRejected(report)

    parsed: list[tuple[int, dict[str, Any]]] = []
    check = _student_values if kind == "students" else _grade_values
    for line, cells in rows[1:]:
        if all(_text(cell) == "" for cell in cells):
            continue
        row = _Row(line, cells, positions, mapping)
        values = check(row)
        report.problems.extend(row.problems)
        if not row.problems:
            parsed.append((line, values))
    report.rows = len(parsed) + len({p.line for p in report.problems})

    if kind == "students":
        _check_student_duplicates(parsed, mapping, report)
    else:
        _check_grade_rows(session, parsed, mapping, report)
    if report.problems:
        report.problems.sort(key=lambda problem: problem.line)
        logger.info(
            "import_rejected",
            extra={"kind": kind, "problems": len(report.problems), "actor": actor},
        )
        raise ImportRejected(report)

    with session.begin_nested():
        if kind == "students":
            _write_students(session, parsed, report)
        else:
            _write_grades(session, parsed, report)
    logger.info(
        "import_done",
        extra={
            "kind": kind,
            "rows": report.rows,
            "inserted": report.created,
            "changed": report.updated,
            "unchanged": report.unchanged,
            "actor": actor,
        },
    )
    return report


def _check_student_duplicates(
    parsed: list[tuple[int, dict[str, Any]]],
    mapping: ColumnMapping,
    report: ImportReport,
) -> None:
    seen: dict[str, int] = {}
    for line, values in parsed:
        first = seen.setdefault(values["number"], line)
        if first != line:
            report.problems.append(
                Problem(
                    line,
                    mapping.headers["number"],
                    str(lazy_gettext("same student as line %(line)s", line=first)),
                )
            )


def _check_grade_rows(
    session: Session,
    parsed: list[tuple[int, dict[str, Any]]],
    mapping: ColumnMapping,
    report: ImportReport,
) -> None:
    numbers = {values["number"] for _, values in parsed}
    known = set(
        session.scalars(
            select(Person.number)
            .join(StudentRecord, StudentRecord.person_id == Person.id)
            .where(Person.number.in_(numbers))
        )
    )
    courses: dict[str, tuple[int, tuple[Any, ...]]] = {}
    attempts: dict[tuple[str, str, str, ExamKind], int] = {}
    for line, values in parsed:
        if values["number"] not in known:
            report.problems.append(
                Problem(
                    line,
                    mapping.headers["number"],
                    str(lazy_gettext("no student record with this number")),
                )
            )
        definition = _course_definition(values)
        first_line, first = courses.setdefault(
            values["course_code"], (line, definition)
        )
        if first != definition:
            report.problems.append(
                Problem(
                    line,
                    mapping.headers["course_code"],
                    str(
                        lazy_gettext(
                            "the course differs from line %(line)s", line=first_line
                        )
                    ),
                )
            )
        key = (
            values["number"],
            values["course_code"],
            values["term"],
            values["exam_kind"],
        )
        first_attempt = attempts.setdefault(key, line)
        if first_attempt != line:
            report.problems.append(
                Problem(
                    line,
                    "",
                    str(
                        lazy_gettext(
                            "same attempt as line %(line)s", line=first_attempt
                        )
                    ),
                )
            )


def _course_definition(values: dict[str, Any]) -> tuple[Any, ...]:
    return (
        values["course_name_zh"],
        values["course_name_en"],
        values["credits"],
        values["category"],
    )


def _apply(target: Any, values: dict[str, Any]) -> bool:
    """Set the differing attributes; whether any differed."""
    changed = False
    for key, value in values.items():
        if getattr(target, key) != value:
            setattr(target, key, value)
            changed = True
    return changed


def _write_students(
    session: Session, parsed: list[tuple[int, dict[str, Any]]], report: ImportReport
) -> None:
    for _, values in parsed:
        person = find_person(session, values["number"])
        created = person is None
        if person is None:
            person = Person(
                number=values["number"],
                kind=PersonKind.STUDENT,
                name_zh=values["name_zh"],
                name_en=values["name_en"],
            )
            session.add(person)
            session.flush()
        changed = _apply(
            person, {"name_zh": values["name_zh"], "name_en": values["name_en"]}
        )
        record = session.scalar(
            select(StudentRecord).where(StudentRecord.person_id == person.id)
        )
        details = {
            key: value
            for key, value in values.items()
            if key not in {"number", "name_zh", "name_en"}
        }
        details["degree_zh"] = details["degree_zh"] or ""
        details["degree_en"] = details["degree_en"] or ""
        if record is None:
            session.add(StudentRecord(person=person, **details))
            created = True
        else:
            changed = _apply(record, details) or changed
        if created:
            report.created += 1
        elif changed:
            report.updated += 1
        else:
            report.unchanged += 1
    session.flush()


def _write_grades(
    session: Session, parsed: list[tuple[int, dict[str, Any]]], report: ImportReport
) -> None:
    students = {
        number: record
        for record, number in session.execute(
            select(StudentRecord, Person.number)
            .join(Person, StudentRecord.person_id == Person.id)
            .where(Person.number.in_({values["number"] for _, values in parsed}))
        )
    }
    courses = {
        course.code: course
        for course in session.scalars(
            select(Course).where(
                Course.code.in_({values["course_code"] for _, values in parsed})
            )
        )
    }
    for _, values in parsed:
        definition = {
            "name_zh": values["course_name_zh"],
            "name_en": values["course_name_en"],
            "credits": values["credits"],
            "category": values["category"],
        }
        course = courses.get(values["course_code"])
        if course is None:
            course = Course(code=values["course_code"], **definition)
            session.add(course)
            session.flush()
            courses[course.code] = course
        else:
            _apply(course, definition)

    existing = {
        (entry.student_id, entry.course_id, entry.term, entry.exam_kind): entry
        for entry in session.scalars(
            select(GradeEntry).where(
                GradeEntry.student_id.in_([s.id for s in students.values()])
            )
        )
    }
    for _, values in parsed:
        student = students[values["number"]]
        course = courses[values["course_code"]]
        key = (student.id, course.id, values["term"], values["exam_kind"])
        attempt = {
            "score": values["score"],
            "grade": values["grade"],
            "grade_points": values["grade_points"],
            "passed": values["passed"],
        }
        entry = existing.get(key)
        if entry is None:
            session.add(
                GradeEntry(
                    student_id=student.id,
                    course_id=course.id,
                    term=values["term"],
                    exam_kind=values["exam_kind"],
                    **attempt,
                )
            )
            report.created += 1
        elif _apply(entry, attempt):
            report.updated += 1
        else:
            report.unchanged += 1
    session.flush()
