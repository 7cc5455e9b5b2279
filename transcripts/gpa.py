"""Grade points, GPA and credit totals on the scales Chinese universities use.

A scale turns one attempt's mark into grade points; ``summarise`` picks which
attempts count under a ``RetakePolicy`` and returns the credit-weighted GPA and
credit totals. All arithmetic is ``Decimal``; GPA is rounded half-up to two places
only at the end.

Scales (``SCALES``):

``4.0-standard``  90–100 → 4, 80–89 → 3, 70–79 → 2, 60–69 → 1, below 60 → 0
``4.0-tiered``    the ten-band table many universities print on their transcripts:
                  90 → 4.0, 85 → 3.7, 82 → 3.3, 78 → 3.0, 75 → 2.7, 72 → 2.3,
                  68 → 2.0, 64 → 1.5, 60 → 1.0
``4.0-pku``       Peking University's formula ``4 − 3(100 − x)² / 1600`` from 60
``5.0``           ``x / 10 − 5`` from 60 (60 → 1.0, 85 → 3.5, 100 → 5.0)
``recorded``      the grade points the academic affairs system exported

Marks given as levels are converted to the usual percentage equivalents first
(优秀 95, 良好 85, 中等 75, 及格 65, 不及格 0), letters to the middle of their band
on the tiered table (A 95, A- 87, B+ 83, B 80, B- 76, C+ 73, C 70, C- 66, D 62,
F 0). Pass/fail marks (合格 / 不合格, P / F) earn credits but stay out of the GPA.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal

from transcripts.records import CourseCategory, ExamKind

ZERO = Decimal(0)
PASS_MARK = Decimal(60)

LEVELS: dict[str, Decimal] = {
    "优秀": Decimal(95), "优": Decimal(95), "excellent": Decimal(95),
    "良好": Decimal(85), "良": Decimal(85), "good": Decimal(85),
    "中等": Decimal(75), "中": Decimal(75), "fair": Decimal(75),
    "及格": Decimal(65), "pass": Decimal(65),
    "不及格": ZERO, "fail": ZERO,
}  # fmt: skip

LETTERS: dict[str, Decimal] = {
    "A+": Decimal(98), "A": Decimal(95), "A-": Decimal(87), "B+": Decimal(83),
    "B": Decimal(80), "B-": Decimal(76), "C+": Decimal(73), "C": Decimal(70),
    "C-": Decimal(66), "D+": Decimal(64), "D": Decimal(62), "D-": Decimal(60),
    "F": ZERO,
}  # fmt: skip

PASS_FAIL = {"合格", "不合格", "通过", "不通过", "P", "F*", "PASSED", "FAILED"}
"""Marks that only say pass or fail. ``F`` alone is a letter grade (zero points);
a pass/fail fail is written ``不合格`` or ``FAILED``."""


class UnknownMark(ValueError):
    """A mark that is neither a number, a level, a letter nor pass/fail."""


def mark_equivalent(score: Decimal | None, grade: str | None) -> Decimal | None:
    """The percentage mark an attempt stands for, or None for pass/fail."""
    if score is not None:
        return score
    text = (grade or "").strip()
    if text.upper() in PASS_FAIL or text in PASS_FAIL:
        return None
    if text in LEVELS or text.lower() in LEVELS:
        return LEVELS.get(text, LEVELS.get(text.lower()))
    if text.upper() in LETTERS:
        return LETTERS[text.upper()]
    raise UnknownMark(text)


def is_pass_fail(grade: str | None) -> bool:
    text = (grade or "").strip()
    return text.upper() in PASS_FAIL or text in PASS_FAIL


# -- scales ----------------------------------------------------------------------


def _standard(mark: Decimal) -> Decimal:
    if mark >= 90:
        return Decimal(4)
    if mark >= 60:
        return Decimal(int(mark // 10) - 5)
    return ZERO


TIERS = [
    (90, "4.0"), (85, "3.7"), (82, "3.3"), (78, "3.0"), (75, "2.7"),
    (72, "2.3"), (68, "2.0"), (64, "1.5"), (60, "1.0"),
]  # fmt: skip


def _tiered(mark: Decimal) -> Decimal:
    for floor, points in TIERS:
        if mark >= floor:
            return Decimal(points)
    return ZERO


def _pku(mark: Decimal) -> Decimal:
    if mark < PASS_MARK:
        return ZERO
    return Decimal(4) - Decimal(3) * (100 - mark) ** 2 / Decimal(1600)


def _five(mark: Decimal) -> Decimal:
    if mark < PASS_MARK:
        return ZERO
    return mark / 10 - 5


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    maximum: Decimal
    label_zh: str
    label_en: str
    points: Callable[[Decimal], Decimal] | None
    """Mark → grade points; None for ``recorded``, which uses the exported ones."""


SCALES: dict[str, Scale] = {
    scale.name: scale
    for scale in [
        Scale("4.0-standard", Decimal(4), "4.0 分制", "4.0 scale", _standard),
        Scale("4.0-tiered", Decimal(4), "4.0 分制（十档）", "4.0 scale (ten bands)",
              _tiered),
        Scale("4.0-pku", Decimal(4), "4.0 分制（北大公式）", "4.0 scale (PKU formula)",
              _pku),
        Scale("5.0", Decimal(5), "5.0 分制", "5.0 scale", _five),
        Scale("recorded", Decimal(4), "教务系统绩点", "grade points as recorded",
              None),
    ]
}  # fmt: skip


class RetakePolicy(enum.StrEnum):
    """Which attempts at one course count towards the GPA."""

    HIGHEST = "highest"
    """The attempt with the most grade points (the later one on a tie)."""

    LATEST = "latest"
    """The last attempt in time, even if it scored lower."""

    ALL = "all"
    """Every attempt, so a failed first attempt keeps weighing on the GPA."""


# -- summaries ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What the calculation needs of one grade entry."""

    course_code: str
    credits: Decimal
    category: CourseCategory
    term: str
    exam_kind: ExamKind
    passed: bool
    score: Decimal | None = None
    grade: str | None = None
    recorded_points: Decimal | None = None
    ref: object = None
    """The caller's own handle (a ``GradeEntry`` id), returned in ``counted``."""


@dataclasses.dataclass(frozen=True)
class Summary:
    scale: str
    policy: RetakePolicy
    gpa: Decimal
    """Rounded half-up to two places; 0.00 when nothing is graded."""
    gpa_credits: Decimal
    """Credits of the attempts that count towards the GPA."""
    earned_credits: Decimal
    """Credits of the courses passed, each course once."""
    earned_by_category: dict[CourseCategory, Decimal]
    weighted_average: Decimal | None
    """Credit-weighted mean percentage mark of the counted attempts with a mark,
    rounded to two places (加权平均分)."""
    points: dict[object, Decimal]
    """Grade points of every attempt on this scale, by ``Attempt.ref``."""
    counted: frozenset[object]
    """``Attempt.ref`` of the attempts that count towards the GPA."""


_KIND_ORDER = {kind: index for index, kind in enumerate(ExamKind)}


def attempt_points(attempt: Attempt, scale: Scale, cap_makeup: bool) -> Decimal | None:
    """Grade points of one attempt, or None when it is pass/fail."""
    if scale.points is None:
        if is_pass_fail(attempt.grade):
            return None
        return attempt.recorded_points if attempt.recorded_points is not None else ZERO
    mark = mark_equivalent(attempt.score, attempt.grade)
    if mark is None:
        return None
    if cap_makeup and attempt.exam_kind is ExamKind.MAKEUP and attempt.passed:
        mark = min(mark, PASS_MARK)
    if not attempt.passed:
        return ZERO
    return scale.points(mark)


def summarise(
    attempts: Iterable[Attempt],
    scale_name: str = "4.0-standard",
    policy: RetakePolicy = RetakePolicy.HIGHEST,
    cap_makeup: bool = True,
) -> Summary:
    scale = SCALES[scale_name]
    by_course: dict[str, list[Attempt]] = {}
    points: dict[object, Decimal] = {}
    for attempt in attempts:
        by_course.setdefault(attempt.course_code, []).append(attempt)

    counted: list[tuple[Attempt, Decimal]] = []
    earned = ZERO
    earned_by_category = {category: ZERO for category in CourseCategory}
    for course_attempts in by_course.values():
        course_attempts.sort(key=lambda a: (a.term, _KIND_ORDER[a.exam_kind]))
        graded = []
        for attempt in course_attempts:
            value = attempt_points(attempt, scale, cap_makeup)
            if value is not None:
                points[attempt.ref] = value
                graded.append((attempt, value))
        if any(attempt.passed for attempt in course_attempts):
            credits = course_attempts[-1].credits
            earned += credits
            earned_by_category[course_attempts[-1].category] += credits
        if not graded:
            continue
        if policy is RetakePolicy.ALL:
            counted.extend(graded)
        elif policy is RetakePolicy.LATEST:
            counted.append(graded[-1])
        else:
            # max() keeps the first of equals; reversed makes that the latest.
            counted.append(max(reversed(graded), key=lambda pair: pair[1]))

    gpa_credits = sum((attempt.credits for attempt, _ in counted), ZERO)
    weighted = sum((attempt.credits * value for attempt, value in counted), ZERO)
    gpa = (weighted / gpa_credits) if gpa_credits else ZERO
    marked = [
        (attempt.credits, _capped_mark(attempt, cap_makeup))
        for attempt, _ in counted
        if attempt.score is not None
        or mark_equivalent(attempt.score, attempt.grade) is not None
    ]
    marked_credits = sum((credits for credits, _ in marked), ZERO)
    average = (
        _two_places(sum((c * m for c, m in marked), ZERO) / marked_credits)
        if marked_credits
        else None
    )
    return Summary(
        scale=scale.name,
        policy=policy,
        gpa=_two_places(gpa),
        gpa_credits=gpa_credits,
        earned_credits=earned,
        earned_by_category=earned_by_category,
        weighted_average=average,
        points=points,
        counted=frozenset(attempt.ref for attempt, _ in counted),
    )


def _capped_mark(attempt: Attempt, cap_makeup: bool) -> Decimal:
    mark = mark_equivalent(attempt.score, attempt.grade) or ZERO
    if cap_makeup and attempt.exam_kind is ExamKind.MAKEUP and attempt.passed:
        return min(mark, PASS_MARK)
    return mark


def _two_places(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
