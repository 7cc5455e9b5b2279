"""Cohort batches on the ``rq`` backend: real ``flask transcripts worker``
processes taking jobs from the real Redis at 127.0.0.1:6379.

Each test has a queue of its own name, so that parallel test processes (and the
SQLite and PostgreSQL runs on one machine) never share jobs, and every Redis key
made under that name is removed afterwards. The workers share the test's
database and instance folder (keys, issued files), as workers on several
machines share a database and storage. Signing is at B-B, as in
``test_batches.py``: the property under test is the bookkeeping.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.job import Job
from sqlalchemy import func, select

from campus.settings import SettingsError
from transcripts import batch_queue, batches, registry
from transcripts.config import DEVELOPMENT_REDIS_URL, TranscriptConfig

from .test_batches import COLLEGE, ROOT, _cohort, _environment

FLASK = str(Path(sys.executable).with_name("flask"))
REDIS_URL = os.environ.get("CAMPUS_TEST_REDIS_URL", DEVELOPMENT_REDIS_URL)
START_SECONDS = 60


@pytest.fixture
def queue_config(app, monkeypatch):
    """The app's transcript configuration switched to ``rq`` on a fresh queue."""
    service = registry.transcript_service(app)
    config = dataclasses.replace(
        service.config,
        batch_backend="rq",
        queue=f"test-{uuid.uuid4().hex[:12]}",
        redis_url=REDIS_URL,
    )
    monkeypatch.setattr(service, "config", config)
    yield config
    batch_queue.remove_queue(config)


@dataclasses.dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def start_workers(settings, queue_config, tmp_path):
    """Start ``flask transcripts worker`` processes and wait until each has run
    its start-up and listens; stopped with SIGTERM (or killed) at the end."""
    started: list[WorkerProcess] = []

    def start(count: int, **environ: str) -> list[WorkerProcess]:
        env = {
            **_environment(settings),
            "CAMPUS_TRANSCRIPTS_BATCH_BACKEND": "rq",
            "CAMPUS_TRANSCRIPTS_QUEUE": queue_config.queue,
            "CAMPUS_TRANSCRIPTS_REDIS_URL": queue_config.redis_url,
            **environ,
        }
        new = []
        for _ in range(count):
            name = f"{queue_config.queue}-w{len(started) + 1}"
            log = tmp_path / f"{name}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [FLASK, "transcripts", "worker", "--name", name],
                    cwd=ROOT,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            worker = WorkerProcess(name, process, log)
            started.append(worker)
            new.append(worker)
        _wait_until_listening(queue_config, started)
        return new

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in started:
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def _wait_until_listening(
    config: TranscriptConfig, workers: list[WorkerProcess]
) -> None:
    connection = batch_queue.connect(config)
    queue = batch_queue.queue_of(config, connection)
    deadline = time.monotonic() + START_SECONDS
    while batch_queue.listening_workers(queue) < len(workers):
        for worker in workers:
            if worker.process.poll() is not None:
                pytest.fail(f"worker {worker.name} exited:\n{worker.log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail("workers did not start in time")
        time.sleep(0.1)
    connection.close()


def _issuances_per_student(session) -> dict[int, int]:
    return dict(
        session.execute(
            select(registry.Issuance.student_id, func.count()).group_by(
                registry.Issuance.student_id
            )
        ).all()
    )


def _new_batch(session):
    batch = batches.create_batch(
        session, college=COLLEGE, graduation_year=2026, actor="test"
    )
    session.commit()
    return batch.id


def test_two_workers_share_a_cohort_and_issue_everyone_once(
    app, session, queue_config, start_workers
):
    students = _cohort(session, 8)
    first, second = start_workers(2)
    batch_id = _new_batch(session)

    seen = []
    final = batches.run_batch(app, batch_id, on_progress=seen.append)

    assert (final.issued, final.failed, final.pending) == (8, 0, 0)
    assert final.finished
    assert seen[-1].issued == 8
    per_student = _issuances_per_student(session)
    assert per_student == {student.id: 1 for student in students}
    connection = Redis.from_url(queue_config.redis_url)
    jobs = [
        Job.fetch(batch_queue.job_id(queue_config, item_id), connection)
        for item_id in session.scalars(
            select(batches.BatchItem.id).where(batches.BatchItem.batch_id == batch_id)
        )
    ]
    assert {job.worker_name for job in jobs} == {first.name, second.name}


def test_enqueueing_a_batch_twice_queues_each_item_once(app, session, queue_config):
    # No worker runs: the jobs stay waiting.
    _cohort(session, 3)
    batch_id = _new_batch(session)
    pending = batches.pending_items(session, batch_id)
    connection = batch_queue.connect(queue_config)
    queue = batch_queue.queue_of(queue_config, connection)

    first = batch_queue.enqueue(queue_config, queue, batch_id, pending)
    second = batch_queue.enqueue(queue_config, queue, batch_id, pending)

    assert (first, second) == (3, 0)
    assert sorted(queue.get_job_ids()) == sorted(
        batch_queue.job_id(queue_config, item_id) for item_id in pending
    )


def test_a_worker_killed_mid_item_loses_only_that_item_until_the_batch_runs_again(
    app, session, queue_config, start_workers
):
    students = _cohort(session, 10)
    # Given: one worker whose timestamp authority accepts connections and never
    # answers, so that its first item hangs in signing until it is killed.
    with socket.create_server(("127.0.0.1", 0)) as silent_tsa:
        (doomed,) = start_workers(
            1,
            CAMPUS_TRANSCRIPTS_SIGNING_LEVEL="B-T",
            CAMPUS_SIGNING_TSA_URLS=f"http://127.0.0.1:{silent_tsa.getsockname()[1]}/",
            CAMPUS_SIGNING_TIMEOUT_SECONDS="300",
        )
        (survivor,) = start_workers(1)
        batch_id = _new_batch(session)
        connection = batch_queue.connect(queue_config)
        queue = batch_queue.queue_of(queue_config, connection)

        # When: the items are queued, and that worker is killed holding one.
        batch_queue.enqueue(
            queue_config, queue, batch_id, batches.pending_items(session, batch_id)
        )
        session.commit()
        orphan = int(_job_in_hand(connection, doomed).rsplit("-", 1)[1])
        doomed.kill()

    # The other worker takes everything still queued; the killed worker's item
    # stays pending, its job lost with it.
    while queue.count:
        time.sleep(0.1)
    assert batches.pending_items(session, batch_id)[0] == orphan
    session.commit()

    # Then: running the batch again queues that item anew and finishes.
    final = batches.run_batch(app, batch_id)

    assert (final.issued, final.failed, final.pending) == (10, 0, 0)
    assert final.finished and survivor.process.poll() is None
    assert _issuances_per_student(session) == {s.id: 1 for s in students}


def _job_in_hand(connection: Redis, worker: WorkerProcess) -> str:
    """The id of the job ``worker`` is performing, once it performs one."""
    key = SimpleWorker.redis_worker_namespace_prefix + worker.name
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        found = SimpleWorker.find_by_key(key, connection=connection)
        current = found.get_current_job_id() if found else None
        if current:
            return current
        time.sleep(0.01)
    pytest.fail(f"worker {worker.name} took no job:\n{worker.log.read_text()}")


def test_failures_on_a_worker_are_recorded_and_listed_by_the_cli(
    app, session, settings, queue_config, start_workers, tmp_path
):
    # Given: a worker whose storage folder is a file: every write fails.
    students = _cohort(session, 2)
    blocked = tmp_path / "blocked-storage"
    blocked.write_text("not a folder")
    start_workers(1, CAMPUS_TRANSCRIPTS_STORAGE_PATH=str(blocked))

    # When: the CLI issues the cohort on the queue.
    finished = subprocess.run(
        [FLASK, "transcripts", "issue-cohort", "--college", COLLEGE, "--year",
         "2026"],
        cwd=ROOT,
        env={
            **_environment(settings),
            "CAMPUS_TRANSCRIPTS_BATCH_BACKEND": "rq",
            "CAMPUS_TRANSCRIPTS_QUEUE": queue_config.queue,
            "CAMPUS_TRANSCRIPTS_REDIS_URL": queue_config.redis_url,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip

    # Then: both are failed, with the step, and listed; nobody is issued.
    assert finished.returncode == 2, finished.stderr
    assert "0 issued, 2 failed, 0 pending, of 2" in finished.stdout
    for student in students:
        assert f"failed {student.number}: store:" in finished.stderr
    session.expire_all()
    batch_id = session.scalar(
        select(batches.Batch.id).where(batches.Batch.college == COLLEGE)
    )
    assert [number for number, _ in batches.failures(session, batch_id)] == sorted(
        s.number for s in students
    )
    assert _issuances_per_student(session) == {}


def test_the_backend_is_process_or_rq():
    assert TranscriptConfig.from_environ({}).batch_backend == "process"
    assert (
        TranscriptConfig.from_environ(
            {"CAMPUS_TRANSCRIPTS_BATCH_BACKEND": "rq"}
        ).resolved_redis_url
        == DEVELOPMENT_REDIS_URL
    )
    with pytest.raises(SettingsError, match="BATCH_BACKEND"):
        TranscriptConfig.from_environ({"CAMPUS_TRANSCRIPTS_BATCH_BACKEND": "celery"})
    with pytest.raises(SettingsError, match="QUEUE"):
        TranscriptConfig.from_environ({"CAMPUS_TRANSCRIPTS_QUEUE": "a:b"})


def test_production_refuses_the_rq_backend_without_a_redis_url():
    config = TranscriptConfig.from_environ({"CAMPUS_TRANSCRIPTS_BATCH_BACKEND": "rq"})

    with pytest.raises(SettingsError, match="CAMPUS_TRANSCRIPTS_REDIS_URL"):
        config.check_production()
    configured = dataclasses.replace(config, redis_url="redis://queue.example:6379/2")
    configured.check_production()
