"""The transcript's data: one JSON-ready dictionary, rendered and attached.

``transcript_data`` reads a student's records once and returns everything the
document shows; the layout draws only from it and the same dictionary is attached
to the PDF as ``transcript.json``, so what a machine reads is what a person reads.
Its shape is ``transcripts/schema/transcript-v1.schema.json`` (JSON Schema
2020-12), documented in ``docs/transcripts.md``. Numbers that must stay exact
(credits, marks, grade points, GPA) are strings of decimals.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from transcripts.config import TranscriptConfig
from transcripts.gpa import SCALES, Attempt, RetakePolicy, summarise
from transcripts.records import (
    CourseCategory,
    ExamKind,
    GradeEntry,
    StudentRecord,
    format_score,
    grades_of,
)

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "transcript-v1.schema.json"
LAYOUT_VERSION = "2026.1"
"""Printed in the footer and kept in the registry: which layout drew a file."""


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _date(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def attempts_of(entries: list[GradeEntry]) -> list[Attempt]:
    return [
        Attempt(
            course_code=entry.course.code,
            credits=entry.course.credits,
            category=entry.course.category,
            term=entry.term,
            exam_kind=entry.exam_kind,
            passed=entry.passed,
            score=entry.score,
            grade=entry.grade,
            recorded_points=entry.grade_points,
            ref=entry.id,
        )
        for entry in entries
    ]


def transcript_data(
    session: Session,
    student: StudentRecord,
    config: TranscriptConfig,
    *,
    code: str,
    issued_at: dt.datetime,
    valid_until: dt.datetime,
    verify_url: str,
    document_version: int,
) -> dict[str, Any]:
    entries = grades_of(session, student)
    policy = RetakePolicy(config.retake_policy)
    summary = summarise(
        attempts_of(entries), config.gpa_scale, policy, config.cap_makeup
    )
    scale = SCALES[config.gpa_scale]
    terms: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        points = summary.points.get(entry.id)
        terms.setdefault(entry.term, []).append(
            {
                "code": entry.course.code,
                "name_zh": entry.course.name_zh,
                "name_en": entry.course.name_en,
                "category": entry.course.category.value,
                "credits": _decimal(entry.course.credits),
                "mark": entry.mark,
                "score": None if entry.score is None else format_score(entry.score),
                "grade": entry.grade,
                "grade_points": _decimal(points),
                "exam_kind": entry.exam_kind.value,
                "passed": entry.passed,
                "counted_in_gpa": entry.id in summary.counted,
            }
        )
    person = student.person
    return {
        "schema": f"https://campus-card.invalid/schemas/transcript-v{SCHEMA_VERSION}",
        "schema_version": SCHEMA_VERSION,
        "layout_version": LAYOUT_VERSION,
        "university": {
            "name_zh": config.university_zh,
            "name_en": config.university_en,
            "issuer_zh": config.registrar_zh,
            "issuer_en": config.registrar_en,
        },
        "student": {
            "number": person.number,
            "name_zh": person.name_zh,
            "name_en": person.name_en,
            "gender": student.gender.value,
            "birth_date": _date(student.birth_date),
            "college_zh": student.college_zh,
            "college_en": student.college_en,
            "major_zh": student.major_zh,
            "major_en": student.major_en,
            "programme": student.programme.value,
            "degree_zh": student.degree_zh or None,
            "degree_en": student.degree_en or None,
            "enrolled_on": _date(student.enrolled_on),
            "graduated_on": _date(student.graduated_on),
            "status": student.status.value,
        },
        "terms": [
            {"term": term, "courses": courses} for term, courses in terms.items()
        ],
        "totals": {
            "gpa": _decimal_fixed(summary.gpa),
            "gpa_scale": scale.name,
            "gpa_scale_maximum": _decimal(scale.maximum),
            "retake_policy": policy.value,
            "makeup_capped_at_60": config.cap_makeup,
            "gpa_credits": _decimal(summary.gpa_credits),
            "earned_credits": _decimal(summary.earned_credits),
            "earned_by_category": {
                category.value: _decimal(summary.earned_by_category[category])
                for category in CourseCategory
            },
            "weighted_average": (
                None
                if summary.weighted_average is None
                else _decimal_fixed(summary.weighted_average)
            ),
            "courses_attempted": len({e.course.code for e in entries}),
            "makeup_attempts": sum(e.exam_kind is ExamKind.MAKEUP for e in entries),
            "retake_attempts": sum(e.exam_kind is ExamKind.RETAKE for e in entries),
        },
        "issuance": {
            "verification_code": code,
            "verify_url": verify_url,
            "issued_at": issued_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "valid_until": valid_until.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "document_version": document_version,
        },
    }


def _decimal_fixed(value: Decimal) -> str:
    return f"{value:.2f}"


def to_json(data: dict[str, Any]) -> bytes:
    """The attachment's bytes: UTF-8, keys in a stable order, readable."""
    return json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
