"""Validation in child processes, with a hard deadline.

``signing.validator.DocumentValidator`` checks its time budget only between
signatures: one pyHanko call on a hostile file is never interrupted, and a few
hostile files raise where the validator promises an answer. Whoever needs a
deadline that holds (the public verification page, for files strangers upload;
``flask signing validate``, for a file someone was sent) validates here: each file
in a child process that holds its own warm validator (trust roots parsed once,
pyHanko imported once) and is killed when it overruns. A killed or crashed child
is replaced by a fresh one before the next file.

The children are made with ``spawn``: the web server's threads may hold locks
that a forked copy of the process would inherit held. Each child may limit its
own address space, so that a decompression bomb beyond pyHanko's decoding limits
ends in ``MemoryError`` rather than in the kernel's OOM killer choosing a victim.

A recipe says whether its children may fetch revocation data. The verification
page's never do: the transcripts this service signs at B-LTA carry their
revocation data, and a file from a stranger must not make this server fetch URLs
named in certificates it carries.

Errors::

    WorkerError               the file could not be validated here
    ├── OutOfTime             the deadline passed; the child was killed
    ├── Busy                  no child became free within the deadline
    └── WorkerFailed          the child died or raised (``detail`` says what)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

from signing.validator import ValidationReport

logger = logging.getLogger(__name__)

# Seconds a new child may take to import pyHanko and parse the trust roots, on
# top of the deadline of its first file.
START_SECONDS = 30.0


class WorkerError(RuntimeError):
    """The file could not be validated by a child process."""


class OutOfTime(WorkerError):
    """The deadline passed before the child answered; it was killed."""


class Busy(WorkerError):
    """Every child stayed busy for the whole deadline."""


class WorkerFailed(WorkerError):
    """The child died or raised while validating."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ValidatorRecipe:
    """What a child needs to build its validator: plain, picklable values."""

    roots_der: tuple[bytes, ...]
    max_document_bytes: int
    max_seconds: float
    max_signatures: int
    memory_bytes: int
    """Address-space limit of the child; 0 leaves it unlimited."""
    allow_fetching: bool = False
    """Whether the child may fetch revocation data the file lacks."""
    timeout: float = 10.0
    """Seconds each fetch may take."""


def _serve(connection: Connection, recipe: ValidatorRecipe) -> None:
    """The child's loop: ``(pdf, moment)`` in, ``("report", ValidationReport)``
    or ``("error", text)`` out, until the parent closes the pipe."""
    import resource

    from asn1crypto import x509

    from signing import QUIET_LOGGERS
    from signing.validator import DocumentValidator

    if recipe.memory_bytes:
        resource.setrlimit(
            resource.RLIMIT_AS, (recipe.memory_bytes, recipe.memory_bytes)
        )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # pyHanko warns about every oddity of a hostile file; the answer says enough.
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
    validator = DocumentValidator(
        [x509.Certificate.load(der) for der in recipe.roots_der],
        allow_fetching=recipe.allow_fetching,
        timeout=recipe.timeout,
        max_document_bytes=recipe.max_document_bytes,
        max_seconds=recipe.max_seconds,
        max_signatures=recipe.max_signatures,
    )
    while True:
        try:
            # From the parent that started us: unpickling trusts no stranger.
            pdf, moment = connection.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, Any] = (
                "report",
                validator.validate(pdf, moment=moment),
            )
        except MemoryError:
            answer = ("error", "the file needs more memory than a check may use")
        except Exception as error:  # noqa: BLE001 - a hostile file is an answer
            answer = ("error", f"{type(error).__name__}: {str(error)[:200]}")
        del pdf
        try:
            connection.send(answer)
        except (BrokenPipeError, OSError):
            return


class _Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, recipe: ValidatorRecipe) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve,
            args=(child_end, recipe),
            name="transcript-verification",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.fresh = True
        """No file answered yet: its first answer also waits for its start-up."""

    def stop(self) -> None:
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class ValidationWorkers:
    """A fixed number of warm children, each validating one file at a time.

    Thread-safe: the web server's threads take a free child from the queue,
    and a child is in at most one thread's hands."""

    def __init__(self, recipe: ValidatorRecipe, count: int, seconds: float) -> None:
        if count < 1:
            raise ValueError("at least one validation worker is needed")
        self.recipe = recipe
        self.count = count
        self.seconds = seconds
        # Last in, first out: a warm child is reused before an unstarted slot
        # (None) is taken, so a quiet server keeps one child busy, not all.
        self._free: queue.LifoQueue[_Child | None] = queue.LifoQueue()
        for _ in range(count):
            # Made on first use: an app that never verifies a file starts none.
            self._free.put(None)

    def validate(
        self, pdf: bytes, moment: dt.datetime | None = None
    ) -> ValidationReport:
        """The validator's report on ``pdf`` (as of ``moment``, else now), or a
        ``WorkerError``."""
        try:
            child = self._free.get(timeout=self.seconds)
        except queue.Empty:
            logger.warning("verification_workers_busy", extra={"count": self.count})
            raise Busy() from None
        try:
            if child is None:
                child = _Child(self.recipe)
            deadline = self.seconds + (START_SECONDS if child.fresh else 0.0)
            child.connection.send((pdf, moment))
            if not child.connection.poll(deadline):
                logger.warning(
                    "verification_out_of_time",
                    extra={"bytes": len(pdf), "seconds": self.seconds},
                )
                child.stop()
                child = None
                raise OutOfTime()
            kind, value = child.connection.recv()
            child.fresh = False
        except (EOFError, OSError, BrokenPipeError) as error:
            if child is not None:
                exit_code = child.process.exitcode
                child.stop()
                child = None
            else:
                exit_code = None
            logger.warning(
                "verification_worker_died",
                extra={"bytes": len(pdf), "exit_code": exit_code},
            )
            raise WorkerFailed("the check stopped while reading the file") from error
        finally:
            self._free.put(child)
        if kind == "error":
            logger.info("verification_worker_refused", extra={"error": value})
            raise WorkerFailed(value)
        report: ValidationReport = value
        return report

    def warm(self) -> None:
        """Start every child now and wait until each is ready, so that the first
        visitors do not wait for pyHanko to load."""
        taken = [self._free.get() for _ in range(self.count)]
        try:
            for index, child in enumerate(taken):
                if child is None:
                    taken[index] = child = _Child(self.recipe)
                if child.fresh:
                    # A file no validator reads past its header: a cheap
                    # round trip that waits for the child's imports.
                    child.connection.send((b"not a pdf", None))
                    if child.connection.poll(START_SECONDS):
                        child.connection.recv()
                        child.fresh = False
        finally:
            for child in taken:
                self._free.put(child)

    def __enter__(self) -> ValidationWorkers:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every idle child (busy ones are stopped by their owners' pipes
        closing when this process ends)."""
        while True:
            try:
                child = self._free.get_nowait()
            except queue.Empty:
                return
            if child is not None:
                child.stop()


_pools: dict[tuple[ValidatorRecipe, int, float], ValidationWorkers] = {}
_pools_lock = threading.Lock()


def shared_workers(
    recipe: ValidatorRecipe, count: int, seconds: float
) -> ValidationWorkers:
    """One pool per recipe and process: apps made again with the same
    configuration (tests make one per test) reuse warm children."""
    key = (recipe, count, seconds)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ValidationWorkers(recipe, count, seconds)
        return _pools[key]
