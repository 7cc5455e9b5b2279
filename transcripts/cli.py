"""``flask transcripts``: import records, issue one or a cohort, revoke, demo data.

Examples::

    flask transcripts import students roster.xlsx
    flask transcripts import grades grades.csv --map "score=总评成绩,term=学期"
    flask transcripts issue 2023000001
    flask transcripts issue-cohort --college 计算机学院 --year 2026
    flask transcripts worker          # with CAMPUS_TRANSCRIPTS_BATCH_BACKEND=rq
    flask transcripts revoke 42 --reason "成绩更正 grade corrected"
    flask transcripts demo-seed
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from campus.database import db
from transcripts import batches, registry
from transcripts.importing import ColumnMapping, ImportRejected, import_file
from transcripts.records import record_by_number

logger = logging.getLogger(__name__)

transcripts_cli = AppGroup("transcripts", help="Academic records and transcripts.")

ACTOR = "cli"


@transcripts_cli.command("import")
@click.argument("kind", type=click.Choice(["students", "grades"]))
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--map",
    "mapping",
    default="",
    help='Column mapping: "field=Header,..." or a JSON object, or @file.json.',
)
def import_command(kind: str, path: Path, mapping: str) -> None:
    """Import a CSV or Excel (.xlsx) export; all rows or none."""
    if mapping.startswith("@"):
        mapping = Path(mapping[1:]).read_text(encoding="utf-8")
    try:
        with db.transaction() as session:
            report = import_file(
                session,
                kind,
                path.read_bytes(),
                path.name,
                ColumnMapping.parse(kind, mapping),
                actor=ACTOR,
            )
    except ImportRejected as rejected:
        click.echo(
            f"{path.name}: nothing imported; {len(rejected.report.problems)} problems:",
            err=True,
        )
        for problem in rejected.report.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
    click.echo(
        f"{path.name}: {report.rows} rows, {report.created} new, "
        f"{report.updated} updated, {report.unchanged} unchanged"
    )


@transcripts_cli.command("issue")
@click.argument("number")
def issue_command(number: str) -> None:
    """Issue one student's transcript now."""
    with db.transaction() as session:
        student = record_by_number(session, number)
        if student is None:
            raise click.ClickException(f"no academic record for {number}")
        issuance = registry.issue(session, student, actor=ACTOR)
        click.echo(
            f"issued #{issuance.id} v{issuance.document_version} code {issuance.code}"
        )


@transcripts_cli.command("issue-cohort")
@click.option("--college", default=None, help="Chinese or English college name.")
@click.option(
    "--year",
    "graduation_year",
    type=int,
    default=None,
    help="Graduation year, e.g. 2026.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Worker processes (default: CAMPUS_TRANSCRIPTS_WORKERS or CPUs).",
)
@click.option(
    "--new",
    "force_new",
    is_flag=True,
    help="Start a new batch even if one for this cohort is unfinished.",
)
@click.option("--retry-failed", is_flag=True, help="Try failed items again.")
@click.option(
    "--batch",
    "batch_id",
    type=int,
    default=None,
    help="Resume this batch instead of choosing by cohort.",
)
def issue_cohort(
    college: str | None,
    graduation_year: int | None,
    workers: int | None,
    force_new: bool,
    retry_failed: bool,
    batch_id: int | None,
) -> None:
    """Issue transcripts for every graduate of a cohort. Resumes the unfinished
    batch of the same cohort, so running it again after a crash issues nobody
    twice."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    session = db.session()
    if batch_id is not None:
        batch = session.get(batches.Batch, batch_id)
        if batch is None:
            raise click.ClickException(f"no batch {batch_id}")
    else:
        batch = (
            None
            if force_new
            else batches.unfinished_batch(
                session, college=college, graduation_year=graduation_year
            )
        )
        if batch is None:
            batch = batches.create_batch(
                session, college=college, graduation_year=graduation_year, actor=ACTOR
            )
            click.echo(f"batch {batch.id}: {batch.label}")
        else:
            click.echo(f"resuming batch {batch.id}: {batch.label}")
    session.commit()
    batch_id = batch.id

    config = registry.transcript_service(app).config
    if config.batch_backend == "rq":
        click.echo(
            f"queue {config.queue}: issued by `flask transcripts worker` processes"
            + (" (--workers does not apply)" if workers else "")
        )
    bar = click.progressbar(length=1, label="issuing 签发中", show_pos=True)
    seen = {"done": 0}

    def on_progress(state: batches.Progress) -> None:
        bar.length = max(state.total, 1)
        done = state.issued + state.failed
        bar.update(done - seen["done"])
        seen["done"] = done

    # Imported here: rq and redis cost a quarter of a second that every other
    # command of the app would pay.
    from transcripts import batch_queue

    try:
        with bar:
            state = batches.run_batch(
                app,
                batch_id,
                workers=workers,
                retry_failed=retry_failed,
                on_progress=on_progress,
            )
    except batch_queue.QueueUnavailable as error:
        raise click.ClickException(
            f"{error}; batch {batch_id} resumes when run again"
        ) from error
    click.echo(
        f"batch {batch_id}: {state.issued} issued, {state.failed} failed, "
        f"{state.pending} pending, of {state.total}"
    )
    if state.pending:
        # Only the queue backend stops with items pending: no worker listened,
        # or they stalled.
        click.echo(
            f"  {state.pending} not issued yet: check the workers of queue "
            f"{config.queue}, then run this command again to resume",
            err=True,
        )
    failed = batches.failures(db.session(), batch_id)
    for number, error in failed:
        click.echo(f"  failed {number}: {error}", err=True)
    if failed:
        sys.exit(2)
    if state.pending:
        sys.exit(3)


@transcripts_cli.command("worker")
@click.option("--burst", is_flag=True, help="Quit once the queue is empty.")
@click.option("--name", default=None, help="Worker name in Redis (default: random).")
def worker_command(burst: bool, name: str | None) -> None:
    """Issue the queued items of cohort batches (backend ``rq``). Run one per
    CPU, on any machine that shares the database, the issued-file storage and
    the signing key; SIGTERM finishes the item in hand, then stops."""
    from transcripts import batch_queue

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    config = registry.transcript_service(app).config
    if config.batch_backend != "rq":
        click.echo(
            f"note: CAMPUS_TRANSCRIPTS_BATCH_BACKEND is {config.batch_backend!r}; "
            "this worker serves batches started with 'rq'",
            err=True,
        )
    batch_queue.work(app, burst=burst, name=name)


@transcripts_cli.command("revoke")
@click.argument("issuance_id", type=int)
@click.option("--reason", required=True)
def revoke_command(issuance_id: int, reason: str) -> None:
    """Revoke an issuance, with a reason."""
    with db.transaction() as session:
        registry.revoke(session, issuance_id, reason=reason, actor=ACTOR)
    click.echo(f"revoked #{issuance_id}")


@transcripts_cli.command("supersede")
@click.argument("issuance_id", type=int)
@click.option("--reason", required=True)
def supersede_command(issuance_id: int, reason: str) -> None:
    """Issue a new transcript from the current records and supersede the old."""
    with db.transaction() as session:
        new = registry.supersede(session, issuance_id, reason=reason, actor=ACTOR)
        click.echo(f"#{issuance_id} superseded by #{new.id} (code {new.code})")


@transcripts_cli.command("status")
@click.argument("number")
def status_command(number: str) -> None:
    """List a student's issuances as JSON lines."""
    from campus.database import utcnow

    session = db.session()
    student = record_by_number(session, number)
    if student is None:
        raise click.ClickException(f"no academic record for {number}")
    now = utcnow()
    for issuance in registry.issuances_of(session, student):
        click.echo(
            json.dumps(
                {
                    "id": issuance.id,
                    "version": issuance.document_version,
                    "code": issuance.code,
                    "status": issuance.effective_status(now),
                    "issued_at": issuance.issued_at.isoformat(),
                    "sha256": issuance.sha256,
                }
            )
        )


@transcripts_cli.command("demo-seed")
@click.option("--seed", "random_seed", default=2026, show_default=True)
def demo_seed(random_seed: int) -> None:
    """Give the demo students (``flask demo seed``) academic records: two thirds
    graduated in 2026. Does nothing for students who already have one."""
    from transcripts.demo import seed_records

    with db.transaction() as session:
        count = seed_records(session, random_seed)
    click.echo(
        f"academic records for {count} demo students; try "
        "`flask transcripts issue-cohort --college 计算机学院 --year 2026`"
    )


def init_app(app: Flask) -> None:
    app.cli.add_command(transcripts_cli)
