"""Importing the academic affairs system's CSV and Excel exports."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from flask_babel import force_locale
from openpyxl import Workbook
from sqlalchemy import func, select

from campus.people import Person
from transcripts.importing import ColumnMapping, ImportRejected, import_file
from transcripts.records import (
    Course,
    CourseCategory,
    ExamKind,
    GradeEntry,
    StudyStatus,
    record_by_number,
)

STUDENT_HEADER = (
    "学号,姓名,英文姓名,性别,出生日期,学院,学院英文名,专业,专业英文名,培养层次,"
    "学位,学位英文名,入学日期,毕业日期,学籍状态"
)
LETTERS = "文学院,School of Letters,汉语言文学,Chinese Language and Literature,本科"
STUDENTS_CSV = "\n".join(
    [
        STUDENT_HEADER,
        f"2022100001,司马光,Guang Sima,男,2003-05-01,{LETTERS},文学学士,"
        "Bachelor of Arts,2022-09-01,2026-06-30,毕业",
        f"2022100002,林黛玉,Daiyu Lin,女,2004/02/12,{LETTERS},,,2022-09-01,,在读",
        "",
    ]
)

GRADES_CSV = """\
学号,课程代码,课程名称,课程英文名称,学分,课程性质,学年学期,成绩,等级,绩点,考试性质
2022100001,LI101,古代汉语,Classical Chinese,3,必修,2022-2023-1,88,,3.8,正常考试
2022100001,LI102,现代汉语,Modern Chinese,3,必修,2022-2023-1,52,,0,正常考试
2022100001,LI102,现代汉语,Modern Chinese,3,必修,2022-2023-1,71,,2.1,补考
2022100001,GE201,大学体育,Physical Education,1,通识,2022-2023-2,,合格,,正常考试
2022100002,LI101,古代汉语,Classical Chinese,3,必修,2022-2023-1,,优秀,,正常考试
"""


def _import(session, kind, text, filename="export.csv", mapping=None):
    data = text.encode("utf-8") if isinstance(text, str) else text
    # Reasons are translated; the assertions read the English ones.
    with force_locale("en"):
        report = import_file(session, kind, data, filename, mapping)
    session.commit()
    return report


def test_students_then_grades_import_and_link_to_people(session):
    students = _import(session, "students", STUDENTS_CSV)
    grades = _import(session, "grades", GRADES_CSV)

    assert (students.created, students.updated, students.unchanged) == (2, 0, 0)
    assert (grades.created, grades.rows) == (5, 5)
    sima = record_by_number(session, "2022100001")
    assert sima.person.name_zh == "司马光"
    assert sima.status is StudyStatus.GRADUATED
    assert sima.degree_zh == "文学学士"
    lin = record_by_number(session, "2022100002")
    assert lin.birth_date.isoformat() == "2004-02-12"
    assert lin.graduated_on is None
    entries = session.scalars(
        select(GradeEntry).where(GradeEntry.student_id == sima.id)
    ).all()
    makeup = [e for e in entries if e.exam_kind is ExamKind.MAKEUP]
    assert len(makeup) == 1 and makeup[0].score == Decimal("71") and makeup[0].passed
    failed = [e for e in entries if e.course.code == "LI102" and not e.passed]
    assert failed[0].score == Decimal("52")
    pe = session.scalar(select(Course).where(Course.code == "GE201"))
    assert pe.category is CourseCategory.GENERAL


def test_reimporting_the_same_files_changes_nothing(session):
    _import(session, "students", STUDENTS_CSV)
    _import(session, "grades", GRADES_CSV)
    before = session.scalar(select(func.count()).select_from(GradeEntry))

    students = _import(session, "students", STUDENTS_CSV)
    grades = _import(session, "grades", GRADES_CSV)

    assert (students.created, students.updated, students.unchanged) == (0, 0, 2)
    assert (grades.created, grades.updated, grades.unchanged) == (0, 0, 5)
    assert session.scalar(select(func.count()).select_from(GradeEntry)) == before


def test_a_changed_row_is_an_update_not_a_duplicate(session):
    _import(session, "students", STUDENTS_CSV)
    _import(session, "grades", GRADES_CSV)

    report = _import(session, "grades", GRADES_CSV.replace(",88,,3.8,", ",90,,4.0,"))

    assert (report.created, report.updated, report.unchanged) == (0, 1, 4)


def test_a_file_with_bad_rows_imports_nothing_and_lists_every_problem(session):
    _import(session, "students", STUDENTS_CSV)
    bad = GRADES_CSV + (
        "2022100001,LI103,训诂学,Exegetics,三,必修,2022-2023-2,80,,,正常考试\n"
        "2099999999,LI101,古代汉语,Classical Chinese,3,必修,2022-2023-1,80,,,正常考试\n"
        "2022100002,LI104,音韵学,Phonology,2,必修,2022-2024-1,101,,,期末\n"
        "2022100002,LI105,文字学,Philology,2,必修,2023-2024-1,,,,正常考试\n"
        "2022100002,LI101,古代汉语,Classical Chinese,4,必修,2022-2023-2,80,,,正常考试\n"
    )

    with pytest.raises(ImportRejected) as rejected:
        _import(session, "grades", bad)

    problems = [(p.line, p.column, p.reason) for p in rejected.value.report.problems]
    assert (7, "学分", "not a number") in problems
    assert (8, "学号", "no student record with this number") in problems
    assert (9, "学年学期", "not a term (write 2023-2024-1)") in problems
    assert (9, "成绩", "must be between 0 and 100") in problems
    assert (9, "考试性质", "unknown value '期末'") in problems
    assert (10, "成绩", "needs a score or a grade") in problems
    assert (11, "课程代码", "the course differs from line 2") in problems
    assert session.scalar(select(func.count()).select_from(GradeEntry)) == 0
    assert session.scalar(select(func.count()).select_from(Course)) == 0


def test_a_missing_column_is_reported_on_the_header_line(session):
    text = STUDENTS_CSV.replace("学籍状态", "状态")

    with pytest.raises(ImportRejected) as rejected:
        _import(session, "students", text)

    assert [(p.line, p.column) for p in rejected.value.report.problems] == [
        (1, "学籍状态")
    ]
    assert session.scalar(select(func.count()).select_from(Person)) == 0


def test_a_duplicate_student_in_one_file_is_refused(session):
    line = STUDENTS_CSV.splitlines()[1]

    with pytest.raises(ImportRejected) as rejected:
        _import(session, "students", STUDENTS_CSV + line + "\n")

    assert [(p.line, p.reason) for p in rejected.value.report.problems] == [
        (4, "same student as line 2")
    ]


def test_a_column_mapping_reads_another_system_s_headers(session):
    _import(session, "students", STUDENTS_CSV)
    text = GRADES_CSV.replace("学年学期", "开课学期").replace("成绩", "总评成绩")
    mapping = ColumnMapping.parse("grades", "term=开课学期, score=总评成绩")

    report = _import(session, "grades", text, mapping=mapping)

    assert report.created == 5


def test_gbk_exports_are_read(session):
    report = _import(session, "students", STUDENTS_CSV.encode("gbk"))

    assert report.created == 2
    assert record_by_number(session, "2022100001").person.name_zh == "司马光"


def test_excel_export_imports_with_real_line_numbers(session):
    rows = [line.split(",") for line in STUDENTS_CSV.splitlines()]
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append([cell or None for cell in row])
    # Excel keeps numbers as numbers: the student number arrives as a float.
    sheet["A2"] = 2022100001
    sheet["N3"] = "2021-13-01"
    buffer = io.BytesIO()
    workbook.save(buffer)

    with pytest.raises(ImportRejected) as rejected:
        _import(session, "students", buffer.getvalue(), "roster.xlsx")
    assert [(p.line, p.column) for p in rejected.value.report.problems] == [
        (3, "毕业日期")
    ]

    sheet["N3"] = None
    buffer = io.BytesIO()
    workbook.save(buffer)
    report = _import(session, "students", buffer.getvalue(), "roster.xlsx")
    assert report.created == 2
    assert record_by_number(session, "2022100001") is not None


def test_an_unreadable_file_is_one_clear_problem(session):
    with pytest.raises(ImportRejected) as rejected:
        _import(session, "grades", b"PK\x03\x04 not really a workbook", "x.xlsx")

    assert rejected.value.report.problems[0].reason == "the file cannot be read"


def test_the_api_answers_a_rejected_file_with_every_problem(client, sign_in_operator):
    from campus.auth import Role

    sign_in_operator(Role.REGISTRAR)
    bad = STUDENTS_CSV.replace("2003-05-01", "yesterday")

    response = client.post(
        "/api/transcripts/imports",
        data={"kind": "students", "file": (io.BytesIO(bad.encode()), "roster.csv")},
        content_type="multipart/form-data",
        headers={"Accept-Language": "en"},
    )

    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "import_rejected"
    assert body["title"] == "The file was not imported"
    assert body["problems"] == [
        {"line": 2, "column": "出生日期", "reason": "not a date (write 2023-09-01)"}
    ]

    good = client.post(
        "/api/transcripts/imports",
        data={"kind": "students", "file": (io.BytesIO(STUDENTS_CSV.encode()), "r.csv")},
        content_type="multipart/form-data",
    )
    assert good.status_code == 200
    assert good.get_json()["created"] == 2
