"""Transcripts issued per second (records → signed, registered, stored file at
B-LTA) on 1 and 2 workers, against rendering alone plus signing alone of the same
documents in the same run.

Set-up: a fresh instance folder and SQLite database, the development PKI (its TSA,
OCSP responder and CRLs on loopback), and students with eight terms of grades
(three pages each). Then, for the same documents:

1. bare: ``render_transcript`` alone, then ``SigningService.sign`` alone on those
   files, one after the other in this process: the floor of the work;
2. issuance with a pool of 1 worker, then of 2 workers, through
   ``batches.run_batch`` exactly as ``flask transcripts issue-cohort`` runs it.
   Worker start-up (a new process, app, font, key and revocation answers) is left
   out: time runs from the completion of each worker's first document to the
   last completion, the steady state a cohort of thousands lives in.

Goal: issuance per document ≤ 1.5 × (render + sign); 2 workers ≥ 1.8 × one.

    python bench/issuance.py [--quick] [--documents 40]

The last line printed is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_students(count: int, college: str) -> list[int]:
    from campus.database import db
    from tests.transcripts.conftest import give_grades, make_student

    session = db.session()
    ids = []
    for _ in range(count):
        student = make_student(session, college_zh=college)
        give_grades(session, student, terms=8)
        ids.append(student.id)
    session.commit()
    return ids


def bare(app, ids: list[int]) -> tuple[float, float]:
    """Seconds per document: rendering alone, signing alone."""
    from campus.database import db, utcnow
    from transcripts import registry
    from transcripts.records import StudentRecord

    service = registry.transcript_service(app)
    session = db.session()
    pdfs = []
    started = time.perf_counter()
    for student_id in ids:
        student = session.get(StudentRecord, student_id)
        pdfs.append(
            registry.render_transcript(session, service, student, now=utcnow()).pdf
        )
    rendering = (time.perf_counter() - started) / len(ids)
    session.rollback()
    started = time.perf_counter()
    for pdf in pdfs:
        service.sign(pdf)
    signing = (time.perf_counter() - started) / len(ids)
    return rendering, signing


def pooled(app, college: str, workers: int) -> tuple[float, int]:
    """Steady-state seconds per document through a batch of ``workers``."""
    from campus.database import db
    from transcripts import batches

    session = db.session()
    batch = batches.create_batch(
        session, college=college, graduation_year=None, actor="bench"
    )
    session.commit()
    finished: list[float] = []

    def on_progress(state: batches.Progress) -> None:
        done = state.issued + state.failed
        while len(finished) < done:
            finished.append(time.perf_counter())

    state = batches.run_batch(app, batch.id, workers=workers, on_progress=on_progress)
    if state.failed:
        raise SystemExit(f"{state.failed} documents failed: see the log")
    # Each worker's first document also loads the key and fetches revocation
    # answers into that process's cache: timed from the completion after those.
    steady = finished[workers:]
    return (steady[-1] - steady[0]) / (len(steady) - 1), len(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="5 documents (10 for 2 workers)"
    )
    parser.add_argument("--documents", type=int, default=40)
    arguments = parser.parse_args()
    count = 5 if arguments.quick else arguments.documents

    from alembic import command as alembic_command

    from campus import create_app
    from campus.database import db, make_engine
    from campus.settings import Settings

    folder = Path(tempfile.mkdtemp(prefix="bench-issuance-"))
    settings = Settings(
        instance_path=folder,
        database_url=f"sqlite:///{folder / 'bench.sqlite3'}",
        scheduler=False,
        log_level="WARNING",
    )
    db.bind(make_engine(settings.sqlalchemy_url))
    alembic_command.upgrade(db.alembic_config(), "heads")
    app = create_app(settings)
    logging.getLogger().setLevel(logging.WARNING)
    with app.app_context():
        warm = make_students(1, "预热学院")
        bare(app, warm)  # the PKI, its services, the font and the key, once
        ids = make_students(count, "基准一")
        make_students(2 * count, "基准二")
        rendering, signing = bare(app, ids)
        one, _ = pooled(app, "基准一", 1)
        two, _ = pooled(app, "基准二", 2)

    floor = rendering + signing
    print(f"documents per phase: {count} (2 workers: {2 * count}), level B-LTA")
    print(f"render alone:   {rendering * 1000:7.1f} ms/document")
    print(f"sign alone:     {signing * 1000:7.1f} ms/document")
    print(f"issue, 1 worker:{one * 1000:7.1f} ms/document  {1 / one:5.2f} /s")
    print(f"issue, 2 workers:{two * 1000:6.1f} ms/document  {1 / two:5.2f} /s")
    print(
        f"2 workers / 1 worker: {one / two:.2f}x (goal >= 1.8); "
        f"issue / (render + sign): {one / floor:.2f} (goal <= 1.5)"
    )
    print(
        json.dumps(
            {
                "metric": "transcript_issuance_ms_per_document_1_worker_b_lta",
                "value": round(one * 1000, 1),
                "unit": "ms/document",
                "limit": "render alone + sign alone of the same documents, same run "
                "(goal: ratio <= 1.5)",
                "limit_value": round(floor * 1000, 1),
                "ratio": round(one / floor, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
