"""Driving the served app (``live_app``) from threads of its own, as the
scheduler, another request or a second machine would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def in_app(live_app: Any, job: Callable[[], Any]) -> Any:
    """Run ``job`` in a thread of its own inside the served app's context: the
    test's own session stays untouched."""

    def run() -> Any:
        with live_app.app.app_context():
            return job()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def together(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs in threads of their own, released at once by a barrier;
    what each returned, in order (an exception is raised here)."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], Any]) -> Any:
        barrier.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))
