"""The ``rq`` batch backend: one job per student in a Redis queue, so that worker
processes on several machines share one cohort.

``run`` (called by ``batches.run_batch``) queues each pending item as a call of
``batches.issue_in_worker(item_id)`` under the job id ``<queue>-item-<item id>``,
then watches the item rows in the database, not the jobs, and reports progress
through the same callback as the process pool. ``work`` is ``flask transcripts
worker``: an RQ ``SimpleWorker``, which runs each job in its own process instead
of forking a child per job, so that what ``worker_init`` loaded once (the font,
the signing key, cached revocation answers) serves every job it takes.

Redis holds nothing that cannot be made again from the database. An item still
``pending`` whose job is not waiting in the queue is queued again, when a run
starts and when the watcher has seen no item move for ``STALL_SECONDS`` while
some worker listens. That covers a job never queued, one lost with Redis, one
that ended without finishing its item, and one left "started" by a worker that
died (RQ itself notices that only after the job's timeout). A job that is in
fact still running on a live, slow worker is then run twice: the second run
finds the item issued, or loses on the issuance's unique constraint.

Errors: every Redis error of a run surfaces as ``QueueUnavailable``; a worker's
own Redis errors end the worker (RQ's behaviour), and its supervisor restarts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import DuplicateJobError
from rq.job import Job

from campus.database import db
from transcripts.batches import Progress, issue_in_worker, pending_items, progress
from transcripts.config import TranscriptConfig

logger = logging.getLogger(__name__)

JOB_TIMEOUT_SECONDS = 300
"""RQ stops a job after this long. One transcript takes about a second; the rest
is room for the signing service's own timeouts (TSA, OCSP)."""

STALL_SECONDS = 120.0
"""With no item moving for this long, the watcher queues again the pending items
whose jobs are not waiting, or stops watching if no worker listens."""

REQUEUE_ROUNDS = 3
"""How often one run queues stalled items again before it leaves the batch
unfinished for the operator to look at (and run again)."""

POLL_SECONDS = 0.5

RESULT_TTL_SECONDS = 3600
"""How long a finished job stays in Redis, for ``rq info`` and the like; the
item row is the record that lasts."""


class QueueUnavailable(RuntimeError):
    """Redis could not be reached or refused a command; the batch is unchanged
    apart from what workers finished, and running it again resumes it."""


def connect(config: TranscriptConfig, *, blocking: bool = False) -> Redis:
    """A client of the configured Redis. ``blocking`` (a worker's) has no read
    timeout, because RQ waits for jobs in a blocking pop of its own length."""
    return Redis.from_url(
        config.resolved_redis_url,
        socket_connect_timeout=5,
        socket_timeout=None if blocking else 10,
        health_check_interval=30,
    )


def queue_of(config: TranscriptConfig, connection: Redis) -> Queue:
    return Queue(
        config.queue, connection=connection, default_timeout=JOB_TIMEOUT_SECONDS
    )


def job_id(config: TranscriptConfig, item_id: int) -> str:
    return f"{config.queue}-item-{item_id}"


def enqueue(
    config: TranscriptConfig, queue: Queue, batch_id: int, item_ids: list[int]
) -> int:
    """Queue each item whose job is not already waiting; how many were queued.

    Waiting means listed in the queue, not a job status of "queued": a worker
    killed between taking a job and starting it leaves that status behind on
    a job that no list holds any more."""
    ids = [job_id(config, item_id) for item_id in item_ids]
    waiting = set(queue.get_job_ids())
    existing = Job.fetch_many(ids, connection=queue.connection)
    queued = 0
    for item_id, this_job_id, job in zip(item_ids, ids, existing, strict=True):
        if this_job_id in waiting:
            continue
        if job is not None:
            # Ended without finishing the item, or taken by a worker presumed
            # dead: the item row says it is still pending.
            job.delete()
        try:
            queue.enqueue(
                issue_in_worker,
                item_id,
                job_id=this_job_id,
                unique=True,
                description=f"transcript batch {batch_id} item {item_id}",
                result_ttl=RESULT_TTL_SECONDS,
                meta={"batch": batch_id},
            )
        except DuplicateJobError:
            # Another run queued it between our look and our enqueue.
            continue
        queued += 1
    return queued


def listening_workers(queue: Queue) -> int:
    """Workers registered on the queue. One killed with SIGKILL stays registered
    until its registration expires (RQ's worker TTL, minutes)."""
    return SimpleWorker.count(queue=queue)


def run(
    app: Flask,
    batch_id: int,
    pending: list[int],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    poll_seconds: float | None = None,
    stall_seconds: float = STALL_SECONDS,
) -> None:
    """Queue the pending items and watch the batch until no item is pending, or
    until it stalls with no worker listening or after ``REQUEUE_ROUNDS``.
    ``poll_seconds`` None means ``POLL_SECONDS`` as it is at the call (the
    benchmark polls faster, to time completions closely)."""
    from transcripts.registry import transcript_service

    config = transcript_service(app).config
    try:
        queue = queue_of(config, connect(config))
        queued = enqueue(config, queue, batch_id, pending)
        logger.info(
            "batch_enqueued",
            extra={
                "batch": batch_id,
                "queue": config.queue,
                "queued": queued,
                "already_waiting": len(pending) - queued,
                "workers": listening_workers(queue),
            },
        )
        _watch(
            config,
            queue,
            batch_id,
            on_progress,
            POLL_SECONDS if poll_seconds is None else poll_seconds,
            stall_seconds,
        )
    except RedisError as error:
        raise QueueUnavailable(
            f"Redis of queue {config.queue!r}: {type(error).__name__}: {error}"
        ) from error


def _watch(
    config: TranscriptConfig,
    queue: Queue,
    batch_id: int,
    on_progress: Callable[[Progress], None] | None,
    poll_seconds: float,
    stall_seconds: float,
) -> None:
    session = db.new_session()
    try:
        last: Progress | None = None
        moved_at = time.monotonic()
        rounds = 0
        while True:
            state = progress(session, batch_id)
            # End the read snapshot, so that the next poll sees new commits.
            session.rollback()
            if state != last:
                last, moved_at = state, time.monotonic()
                if on_progress:
                    on_progress(state)
            if state.pending == 0:
                return
            if time.monotonic() - moved_at < stall_seconds:
                time.sleep(poll_seconds)
                continue

            extra = {"batch": batch_id, "queue": config.queue}
            if not listening_workers(queue):
                logger.warning("batch_waiting_without_workers", extra=extra)
                return
            if rounds == REQUEUE_ROUNDS:
                logger.warning("batch_stalled", extra={**extra, "rounds": rounds})
                return
            requeued = enqueue(
                config, queue, batch_id, pending_items(session, batch_id)
            )
            session.rollback()
            if requeued:
                rounds += 1
                logger.warning(
                    "batch_requeued_stalled", extra={**extra, "requeued": requeued}
                )
            moved_at = time.monotonic()
    finally:
        session.close()


def remove_queue(config: TranscriptConfig) -> None:
    """Delete every Redis key named after the queue (the queue, its jobs and
    their results, its registries, workers named after it) and its entries in
    RQ's indexes. For tests and benchmarks that make a queue of their own."""
    connection = connect(config)
    try:
        for key in connection.scan_iter(match=f"*{config.queue}*", count=1000):
            connection.delete(key)
        for index in ("rq:queues", "rq:workers"):
            names = connection.smembers(index)
            stale = [name for name in names if config.queue.encode() in name]
            if stale:
                connection.srem(index, *stale)
    finally:
        connection.close()


def work(app: Flask, *, burst: bool = False, name: str | None = None) -> bool:
    """Run a worker on the configured queue in this process until stopped (or,
    with ``burst``, until the queue is empty); whether it ran any job.
    SIGTERM lets the job in hand finish first."""
    from transcripts.batches import worker_init
    from transcripts.registry import transcript_service

    config = transcript_service(app).config
    worker_init(app=app)
    connection = connect(config, blocking=True)
    worker = SimpleWorker(
        [queue_of(config, connection)], connection=connection, name=name
    )
    logger.info(
        "batch_worker_started",
        extra={"queue": config.queue, "worker": worker.name, "burst": burst},
    )
    return worker.work(burst=burst)
