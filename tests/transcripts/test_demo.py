"""``flask transcripts demo-seed`` gives the demo students academic records."""

from __future__ import annotations

from sqlalchemy import select

from campus.people import Person, PersonKind
from transcripts import batches
from transcripts.document import attempts_of
from transcripts.gpa import summarise
from transcripts.records import StudentRecord, StudyStatus, grades_of


def test_demo_seed_makes_graduates_with_records_and_is_idempotent(app, session):
    for index in range(1, 7):
        session.add(
            Person(
                number=f"2023{index:06d}",
                kind=PersonKind.STUDENT,
                name_zh=f"学生{index}",
                name_en=f"Student {index}",
            )
        )
    session.commit()
    runner = app.test_cli_runner()

    first = runner.invoke(args=["transcripts", "demo-seed"])
    second = runner.invoke(args=["transcripts", "demo-seed"])

    assert first.exit_code == 0, first.output
    assert "6 demo students" in first.output
    assert "0 demo students" in second.output
    records = session.scalars(select(StudentRecord)).all()
    graduates = [r for r in records if r.status is StudyStatus.GRADUATED]
    assert len(records) == 6 and len(graduates) == 4
    cohort = batches.cohort(session, college="计算机学院", graduation_year=2026)
    assert [r.person.number for r in cohort] == ["2023000001", "2023000004"]
    summary = summarise(attempts_of(grades_of(session, graduates[0])))
    assert summary.earned_credits > 40
    assert 0 < summary.gpa <= 4
