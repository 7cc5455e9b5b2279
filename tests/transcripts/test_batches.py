"""Cohort batches: a crash half way, a resume, and nobody issued twice.

The crash is real: ``flask transcripts issue-cohort`` runs as its own process
group with a pool of two workers and is killed with SIGKILL once it has reported
100 items done. Signing runs at B-B for this module only: the property under test
is the batch's bookkeeping, and B-LTA would triple the run time without touching
it (the other modules issue at the default B-LTA).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from transcripts import batches, registry
from transcripts.batches import BatchItem, ItemStatus

from .conftest import CHINESE_COURSES, NOW, course, grade, make_student

ROOT = Path(__file__).resolve().parents[2]
COLLEGE = "批量测试学院"


def _cohort(session, size):
    subject = course(session, *CHINESE_COURSES[1])
    students = []
    for _ in range(size):
        student = make_student(session, college_zh=COLLEGE)
        grade(session, student, subject, "2025-2026-1", score="86")
        students.append(student)
    session.commit()
    return students


def _environment(settings) -> dict[str, str]:
    return {
        **os.environ,
        "FLASK_APP": "wsgi",
        "CAMPUS_DATABASE_URL": settings.database_url,
        "CAMPUS_INSTANCE_PATH": str(settings.instance_path),
        "CAMPUS_SCHEDULER": "off",
        "CAMPUS_BASE_URL": settings.base_url,
        "CAMPUS_TRANSCRIPTS_SIGNING_LEVEL": "B-B",
        "CAMPUS_LOG_FORMAT": "text",
    }


def test_a_batch_of_200_killed_half_way_resumes_without_issuing_anyone_twice(
    app, session, settings, monkeypatch
):
    students = _cohort(session, 200)
    flask = str(Path(sys.executable).with_name("flask"))

    # When: the CLI runs the cohort and is killed after 100 reported items.
    process = subprocess.Popen(
        [flask, "transcripts", "issue-cohort", "--college", COLLEGE, "--year",
         "2026", "--workers", "2"],
        cwd=ROOT,
        env=_environment(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    reported = 0
    assert process.stderr is not None
    for line in process.stderr:
        if "batch_item_done" in line:
            reported += 1
            if reported == 100:
                os.killpg(process.pid, signal.SIGKILL)
                break
    process.wait()
    process.stderr.close()
    session.expire_all()

    batch = session.scalar(
        select(batches.Batch).where(batches.Batch.college == COLLEGE)
    )
    interrupted = batches.progress(session, batch.id)
    assert reported == 100
    assert 100 <= interrupted.issued < 200
    assert interrupted.pending == 200 - interrupted.issued
    assert batch.finished_at is None
    session.commit()

    # Then: the same command's cohort is found unfinished and resumed.
    assert batches.unfinished_batch(session, college=COLLEGE, graduation_year=2026)
    session.commit()
    # The resumed run's workers read the level from the environment, as the
    # CLI's did.
    monkeypatch.setenv("CAMPUS_TRANSCRIPTS_SIGNING_LEVEL", "B-B")
    seen = []
    final = batches.run_batch(app, batch.id, workers=2, on_progress=seen.append)

    assert (final.issued, final.failed, final.pending) == (200, 0, 0)
    assert final.finished
    assert seen[0].issued == interrupted.issued
    per_student = dict(
        session.execute(
            select(registry.Issuance.student_id, func.count()).group_by(
                registry.Issuance.student_id
            )
        ).all()
    )
    assert set(per_student) == {s.id for s in students}
    assert set(per_student.values()) == {1}, "nobody issued twice"
    linked = session.scalar(
        select(func.count(func.distinct(registry.Issuance.batch_item_id)))
    )
    assert linked == 200


def _one_item_batch(session):
    (student,) = _cohort(session, 1)
    batch = batches.create_batch(
        session, college=COLLEGE, graduation_year=2026, actor="test"
    )
    session.commit()
    item_id = session.scalar(select(BatchItem.id).where(BatchItem.batch_id == batch.id))
    # End this session's read snapshot: the item is issued by another session.
    session.commit()
    return student, batch, item_id


def test_issuing_an_item_twice_leaves_one_issuance(app, session):
    student, _, item_id = _one_item_batch(session)

    first = batches.issue_item(item_id, now=NOW)
    second = batches.issue_item(item_id, now=NOW)

    assert first == second == (item_id, "issued")
    count = session.scalar(
        select(func.count()).where(registry.Issuance.student_id == student.id)
    )
    assert count == 1


def test_a_failed_item_is_listed_and_not_retried_by_itself(app, session):
    student, batch, item_id = _one_item_batch(session)
    service = registry.transcript_service(app)
    storage = service.storage
    # A storage folder that is a file: every write fails, as a full disk would.
    blocked = Path(app.instance_path) / "blocked-storage"
    blocked.write_text("not a folder")
    service.storage = storage.__class__(blocked)
    try:
        status = batches.issue_item(item_id, now=NOW)
    finally:
        service.storage = storage
        blocked.unlink()

    assert status == (item_id, "failed")
    assert batches.failures(session, batch.id)[0][0] == student.number
    assert batches.failures(session, batch.id)[0][1].startswith("store:")
    item = session.get(BatchItem, item_id)
    session.refresh(item)
    assert item.status is ItemStatus.FAILED and item.attempts == 1
    assert batches.issue_item(item_id, now=NOW) == (item_id, "failed")
    session.commit()
    session.refresh(item)
    assert item.attempts == 1


@pytest.mark.parametrize("year", [2025])
def test_the_cohort_is_graduates_of_the_college_and_year(session, year):
    _cohort(session, 2)
    make_student(session, college_zh=COLLEGE, graduated=False)
    make_student(session, college_zh=COLLEGE, year=year)
    make_student(session, college_zh="别的学院")
    session.commit()

    chosen = batches.cohort(session, college=COLLEGE, graduation_year=2026)

    assert len(chosen) == 2
