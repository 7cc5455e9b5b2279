"""Periodic jobs run inside the web process in the embedded default.

Packages register their jobs with ``register_job`` from their ``init_app``; ``flask
serve`` starts them (never plain ``create_app``, so that tests and CLI commands run
nothing behind anyone's back). Production usually turns this off
(``CAMPUS_SCHEDULER=off``) and runs the same jobs from cron or a systemd timer
through their CLI commands; every job is safe to run on two machines at once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[], Any]
    every_seconds: int | None = None
    cron: str | None = None
    """Crontab fields ``minute hour day month day_of_week`` in the business
    day's time zone, e.g. ``"30 2 * * *"``."""


def register_job(app: Flask, job: Job) -> None:
    app.extensions.setdefault("campus.jobs", []).append(job)


def start(app: Flask) -> BackgroundScheduler:
    settings = app.extensions["campus.settings"]
    scheduler = BackgroundScheduler(timezone=settings.timezone)
    for job in app.extensions.get("campus.jobs", []):
        trigger: Any = (
            CronTrigger.from_crontab(job.cron, timezone=settings.timezone)
            if job.cron
            else IntervalTrigger(seconds=job.every_seconds or 60)
        )
        scheduler.add_job(
            _in_context(app, job),
            trigger,
            id=job.name,
            max_instances=1,
            coalesce=True,
        )
    scheduler.start()
    logger.info(
        "scheduler_started",
        extra={"jobs": ",".join(j.name for j in app.extensions.get("campus.jobs", []))},
    )
    return scheduler


def _in_context(app: Flask, job: Job) -> Callable[[], None]:
    def run() -> None:
        with app.app_context():
            try:
                job.run()
            except Exception:
                # A job that fails tonight runs again at its next turn; the log is
                # where an operator learns of it.
                logger.exception("job_failed", extra={"job": job.name})

    return run
