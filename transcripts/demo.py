"""Academic records for the demo students, so the quick start has graduates.

``flask demo seed`` (payments) creates people numbered 2023000001 and up; this
gives each of them a student record and four years of grades drawn from a fixed
course plan with a seeded random generator, so every run makes the same data.
The first two thirds graduated in 2026 (the cohort to issue in the quick start);
the rest are still enrolled. A few fail a course and pass the make-up
examination or a retake, so that the GPA rules show.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

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

logger = logging.getLogger(__name__)

COLLEGES = [
    ("计算机学院", "School of Computer Science", "计算机科学与技术",
     "Computer Science and Technology", "工学学士", "Bachelor of Engineering"),
    ("经济管理学院", "School of Economics and Management", "金融学", "Finance",
     "经济学学士", "Bachelor of Economics"),
    ("外国语学院", "School of Foreign Languages", "英语", "English",
     "文学学士", "Bachelor of Arts"),
]  # fmt: skip

COMMON = [
    ("GE101", "思想道德与法治", "Ethics and Rule of Law", "3", CourseCategory.GENERAL),
    ("GE102", "大学英语（一）", "College English I", "4", CourseCategory.GENERAL),
    ("GE103", "大学英语（二）", "College English II", "4", CourseCategory.GENERAL),
    ("GE104", "体育（一）", "Physical Education I", "1", CourseCategory.GENERAL),
    ("GE105", "中国近现代史纲要", "Outline of Modern Chinese History", "3",
     CourseCategory.GENERAL),
    ("MA101", "高等数学（上）", "Advanced Mathematics I", "5", CourseCategory.REQUIRED),
    ("MA102", "高等数学（下）", "Advanced Mathematics II", "5",
     CourseCategory.REQUIRED),
    ("MA201", "线性代数", "Linear Algebra", "3", CourseCategory.REQUIRED),
    ("MA202", "概率论与数理统计", "Probability and Statistics", "3",
     CourseCategory.REQUIRED),
    ("EL301", "书法鉴赏", "Appreciation of Chinese Calligraphy", "2",
     CourseCategory.ELECTIVE),
    ("EL302", "中国古典诗词", "Classical Chinese Poetry", "2", CourseCategory.ELECTIVE),
    ("PR401", "毕业实习", "Graduation Internship", "4", CourseCategory.PRACTICE),
    ("PR402", "毕业论文（设计）", "Graduation Thesis", "8", CourseCategory.PRACTICE),
]  # fmt: skip

MAJOR = {
    0: [
        ("CS101", "程序设计基础", "Fundamentals of Programming", "4"),
        ("CS201", "数据结构", "Data Structures", "4"),
        ("CS202", "计算机组成原理", "Computer Organisation", "4"),
        ("CS301", "操作系统", "Operating Systems", "4"),
        ("CS302", "计算机网络", "Computer Networks", "3"),
        ("CS303", "数据库系统", "Database Systems", "3"),
        ("CS304", "编译原理", "Compiler Construction", "3"),
    ],
    1: [
        ("EC101", "微观经济学", "Microeconomics", "3"),
        ("EC102", "宏观经济学", "Macroeconomics", "3"),
        ("EC201", "会计学原理", "Principles of Accounting", "3"),
        ("EC202", "货币银行学", "Money and Banking", "3"),
        ("EC301", "公司金融", "Corporate Finance", "3"),
        ("EC302", "投资学", "Investments", "3"),
        ("EC303", "计量经济学", "Econometrics", "4"),
    ],
    2: [
        ("EN101", "综合英语（一）", "Integrated English I", "4"),
        ("EN102", "综合英语（二）", "Integrated English II", "4"),
        ("EN201", "英语语言学导论", "Introduction to Linguistics", "3"),
        ("EN202", "英国文学史", "History of British Literature", "3"),
        ("EN301", "翻译理论与实践", "Translation Theory and Practice", "3"),
        ("EN302", "同声传译基础", "Introduction to Simultaneous Interpreting", "3"),
        ("EN303", "第二外语（日语）", "Second Foreign Language (Japanese)", "4"),
    ],
}

LEVELS = ["优秀", "良好", "中等", "及格"]


def seed_records(session: Session, random_seed: int = 2026) -> int:
    """Give every demo student without a record one; returns how many."""
    rng = random.Random(random_seed)
    courses = _courses(session)
    people = session.scalars(
        select(Person)
        .outerjoin(StudentRecord, StudentRecord.person_id == Person.id)
        .where(
            Person.kind == PersonKind.STUDENT,
            Person.number.like("2023%"),
            StudentRecord.id.is_(None),
        )
        .order_by(Person.number)
    ).all()
    for person in people:
        seat = int(person.number[-6:]) - 1
        college = seat % len(COLLEGES)
        graduated = seat % 3 != 2
        zh, en, major_zh, major_en, degree_zh, degree_en = COLLEGES[college]
        record = StudentRecord(
            person=person,
            gender=Gender.MALE if rng.random() < 0.5 else Gender.FEMALE,
            birth_date=dt.date(2004, 1, 1) + dt.timedelta(days=rng.randrange(700)),
            college_zh=zh,
            college_en=en,
            major_zh=major_zh,
            major_en=major_en,
            programme=Programme.UNDERGRADUATE,
            degree_zh=degree_zh if graduated else "",
            degree_en=degree_en if graduated else "",
            enrolled_on=dt.date(2022, 9, 1),
            graduated_on=dt.date(2026, 6, 30) if graduated else None,
            status=StudyStatus.GRADUATED if graduated else StudyStatus.ENROLLED,
        )
        session.add(record)
        session.flush()
        plan = [c for c in courses if c.code[:2] in {"GE", "MA", "EL", "PR"}]
        plan += [c for c in courses if c.code in {m[0] for m in MAJOR[college]}]
        for position, course in enumerate(sorted(plan, key=lambda c: c.code)):
            if course.category is CourseCategory.PRACTICE and not graduated:
                continue
            year = min(3, int(course.code[2]) - 1 + position % 2)
            term = f"{2022 + year}-{2023 + year}-{1 + position % 2}"
            _grade(session, rng, record, course, term, seat)
    logger.info("demo_records_seeded", extra={"students": len(people)})
    return len(people)


def _courses(session: Session) -> list[Course]:
    wanted = [
        (code, zh, en, Decimal(credits), category)
        for code, zh, en, credits, category in COMMON
    ] + [
        (code, zh, en, Decimal(credits), CourseCategory.REQUIRED)
        for plan in MAJOR.values()
        for code, zh, en, credits in plan
    ]
    existing = {c.code: c for c in session.scalars(select(Course))}
    for code, zh, en, credits, category in wanted:
        if code not in existing:
            existing[code] = Course(
                code=code, name_zh=zh, name_en=en, credits=credits, category=category
            )
            session.add(existing[code])
    session.flush()
    return [existing[code] for code, *_ in wanted]


def _grade(
    session: Session,
    rng: random.Random,
    record: StudentRecord,
    course: Course,
    term: str,
    seat: int,
) -> None:
    if course.category is CourseCategory.ELECTIVE and course.code == "EL302":
        grade = rng.choice(LEVELS)
        session.add(
            GradeEntry(
                student=record, course=course, term=term, grade=grade,
                exam_kind=ExamKind.REGULAR, passed=True,
            )
        )  # fmt: skip
        return
    if course.code == "GE104":
        session.add(
            GradeEntry(
                student=record, course=course, term=term, grade="合格",
                exam_kind=ExamKind.REGULAR, passed=True,
            )
        )  # fmt: skip
        return
    score = Decimal(min(100, max(45, round(rng.gauss(82, 8)))))
    if course.code == "MA201" and seat % 7 == 3:
        score = Decimal(52)
    passed = score >= 60
    session.add(
        GradeEntry(
            student=record, course=course, term=term, score=score,
            exam_kind=ExamKind.REGULAR, passed=passed,
        )
    )  # fmt: skip
    if passed:
        return
    first, second, number = term.split("-")
    if seat % 2:
        session.add(
            GradeEntry(
                student=record, course=course, term=term,
                score=Decimal(rng.randrange(60, 80)), exam_kind=ExamKind.MAKEUP,
                passed=True,
            )
        )  # fmt: skip
    else:
        later = f"{int(first) + 1}-{int(second) + 1}-{number}"
        session.add(
            GradeEntry(
                student=record, course=course, term=later,
                score=Decimal(rng.randrange(65, 92)), exam_kind=ExamKind.RETAKE,
                passed=True,
            )
        )  # fmt: skip
