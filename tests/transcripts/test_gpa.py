"""GPA and credit totals against calculations done by hand (shown in each test)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from transcripts.gpa import SCALES, Attempt, RetakePolicy, UnknownMark, summarise
from transcripts.records import CourseCategory, ExamKind

D = Decimal


def attempt(
    code,
    credits,
    score=None,
    term="2023-2024-1",
    kind=ExamKind.REGULAR,
    grade=None,
    passed=None,
    category=CourseCategory.REQUIRED,
    points=None,
):
    if passed is None:
        passed = score is None or D(score) >= 60
    return Attempt(
        course_code=code,
        credits=D(credits),
        category=category,
        term=term,
        exam_kind=kind,
        passed=passed,
        score=None if score is None else D(score),
        grade=grade,
        recorded_points=None if points is None else D(points),
        ref=(code, term, kind),
    )


THREE = [attempt("A", "4", "92"), attempt("B", "3", "85"), attempt("C", "2", "71")]


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        # 92→4, 85→3, 71→2: (4·4 + 3·3 + 2·2) / 9 = 29/9 = 3.222…
        ("4.0-standard", "3.22"),
        # 92→4.2, 85→3.5, 71→2.1: (16.8 + 10.5 + 4.2) / 9 = 31.5/9 = 3.5
        ("5.0", "3.50"),
        # 92→4.0, 85→3.7, 71→2.0: (16 + 11.1 + 4) / 9 = 31.1/9 = 3.4555…
        ("4.0-tiered", "3.46"),
        # 4 − 3(100−x)²/1600: 3.88, 3.578125, 2.423125;
        # (15.52 + 10.734375 + 4.84625) / 9 = 31.100625/9 = 3.4556…
        ("4.0-pku", "3.46"),
    ],
)
def test_each_scale_matches_the_hand_calculation(scale, expected):
    summary = summarise(THREE, scale)

    assert summary.gpa == D(expected)
    assert summary.gpa_credits == D(9)
    assert summary.earned_credits == D(9)
    # (92·4 + 85·3 + 71·2) / 9 = 765/9 = 85.0
    assert summary.weighted_average == D("85.00")


RETAKES = [
    attempt("X", "3", "50", term="2023-2024-1"),
    attempt("X", "3", "80", term="2023-2024-2", kind=ExamKind.RETAKE),
    attempt("Z", "2", "75", term="2023-2024-1"),
    attempt("Z", "2", "65", term="2024-2025-1", kind=ExamKind.RETAKE),
    attempt("Y", "1", "95"),
]


@pytest.mark.parametrize(
    ("policy", "expected", "gpa_credits"),
    [
        # X 3, Z 2, Y 4: (9 + 4 + 4) / 6 = 2.833…
        (RetakePolicy.HIGHEST, "2.83", "6"),
        # X 3, Z 1, Y 4: (9 + 2 + 4) / 6 = 2.5
        (RetakePolicy.LATEST, "2.50", "6"),
        # every attempt: (0 + 9 + 4 + 2 + 4) / (3+3+2+2+1) = 19/11 = 1.727…
        (RetakePolicy.ALL, "1.73", "11"),
    ],
)
def test_retake_policies(policy, expected, gpa_credits):
    summary = summarise(RETAKES, "4.0-standard", policy)

    assert summary.gpa == D(expected)
    assert summary.gpa_credits == D(gpa_credits)
    assert summary.earned_credits == D(6), "each course's credits count once"


def test_highest_policy_counts_the_best_attempts_in_the_weighted_average():
    summary = summarise(RETAKES, "4.0-standard", RetakePolicy.HIGHEST)

    # 80·3 + 75·2 + 95·1 = 485; 485 / 6 = 80.833…
    assert summary.weighted_average == D("80.83")
    assert summary.counted == {
        ("X", "2023-2024-2", ExamKind.RETAKE),
        ("Z", "2023-2024-1", ExamKind.REGULAR),
        ("Y", "2023-2024-1", ExamKind.REGULAR),
    }


def test_a_passed_make_up_counts_as_sixty_unless_configured_otherwise():
    attempts = [
        attempt("M", "4", "45"),
        attempt("M", "4", "85", kind=ExamKind.MAKEUP),
    ]

    capped = summarise(attempts, "4.0-standard", cap_makeup=True)
    uncapped = summarise(attempts, "4.0-standard", cap_makeup=False)

    # Capped: 85 counts as 60 → 1.0; uncapped: 85 → 3.0.
    assert capped.gpa == D("1.00")
    assert uncapped.gpa == D("3.00")
    assert capped.earned_credits == uncapped.earned_credits == D(4)


def test_pass_fail_earns_credits_but_stays_out_of_the_gpa():
    attempts = [
        attempt("A", "2", "90"),
        attempt("P", "1", grade="合格"),
        attempt("Q", "1", grade="不合格", passed=False),
    ]

    summary = summarise(attempts, "4.0-standard")

    assert summary.gpa == D("4.00")
    assert summary.gpa_credits == D(2)
    assert summary.earned_credits == D(3)


def test_level_and_letter_grades_use_the_usual_conversions():
    attempts = [
        attempt("L", "2", grade="良好"),  # 85 → 3 (standard), 3.5 (5.0)
        attempt("B", "2", grade="B+"),  # 83 → 3 (standard), 3.3 (5.0)
    ]

    assert summarise(attempts, "4.0-standard").gpa == D("3.00")
    # (3.5·2 + 3.3·2) / 4 = 3.4
    assert summarise(attempts, "5.0").gpa == D("3.40")


def test_recorded_scale_uses_the_exported_grade_points():
    attempts = [
        attempt("A", "3", "88", points="3.8"),
        attempt("B", "1", "70", points="2"),
    ]

    # (3.8·3 + 2·1) / 4 = 3.35
    assert summarise(attempts, "recorded").gpa == D("3.35")


def test_failed_course_without_retake_counts_zero_and_earns_nothing():
    summary = summarise([attempt("A", "3", "90"), attempt("F", "3", "40")], "5.0")

    # (4.0·3 + 0·3) / 6 = 2.0
    assert summary.gpa == D("2.00")
    assert summary.earned_credits == D(3)
    assert summary.earned_by_category[CourseCategory.REQUIRED] == D(3)


def test_nothing_graded_is_zero_not_an_error():
    summary = summarise([], "4.0-standard")

    assert summary.gpa == D("0.00")
    assert summary.weighted_average is None


def test_an_unknown_mark_is_refused():
    with pytest.raises(UnknownMark):
        summarise([attempt("A", "2", grade="很好")], "4.0-standard")


def test_every_scale_tops_out_at_its_maximum():
    for scale in SCALES.values():
        if scale.points is not None:
            assert scale.points(D(100)) == scale.maximum
            assert scale.points(D(59)) == 0
