"""Transcript uploads verified through the HTTP endpoint, against a bare call of
pyHanko's validation of the same file; and verification codes looked up per second.

Set-up: a fresh instance folder and PostgreSQL database, the development PKI, and
one real issuance (eight terms of grades, three pages, signed at B-LTA and
registered). The app is served by waitress in a process of its own, with the
default two validation workers and the rate limits raised out of the way. Then,
in the same run:

1. uploads: ``POST /api/verify`` of the issued file over HTTP, one at a time, each
   answered ``authentic`` (multipart, size and header checks, validation in a
   warm child process, registry look-up by SHA-256, access log row), taking
   turns with the bare call in this process, so that both meet the same load:
   ``PdfFileReader``, ``compute_integrity_info`` and ``ades_lta_validation``
   under the validator's own offline policy, as ``bench/signing.py`` calls it;
2. code look-ups: ``GET /api/verify/codes/<code>`` of the registered code from
   four client threads for a few seconds (check symbol, registry, access log).

Goal (issue 9): an upload takes at most 1.2 x the bare validation time per file.
Medians per file are compared; the last line is one JSON object about that goal
(``ratio`` = ours / bare, so at most 1.2 means it is met), the line before it
gives the code look-ups per second. Numbers are measurements, not assertions.

    python bench/verification.py [--quick] [--rounds 31] [--seconds 10]

Needs PostgreSQL: DATABASE_URL, or postgresql+psycopg://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import logging
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from ledger import create_database, drop_database  # noqa: E402  (bench/ledger.py)

CLIENTS = 4
"""Threads looking up codes at the same time."""
THREADS = 8
"""waitress threads."""
NO_LIMITS = {
    "CAMPUS_VERIFICATION_CODE_LIMIT": "1000000 per minute",
    "CAMPUS_VERIFICATION_WRONG_CODE_LIMIT": "1000000 per minute",
    "CAMPUS_VERIFICATION_UPLOAD_LIMIT": "1000000 per minute",
}


def make_app(url: str, instance: str, base_url: str = "http://127.0.0.1"):  # type: ignore[no-untyped-def]
    from campus import create_app
    from campus.settings import Settings

    app = create_app(
        Settings(
            database_url=url,
            instance_path=Path(instance),
            scheduler=False,
            log_level="WARNING",
            base_url=base_url,
        )
    )
    logging.disable(logging.INFO)
    return app


def issue(app) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
    """One real issuance, signed, stored and registered: (file, code)."""
    from campus.database import db
    from tests.transcripts.conftest import give_grades, make_student
    from transcripts import registry

    with app.app_context():
        session = db.session()
        student = make_student(session, name_zh="欧阳娜娜", name_en="Nana Ouyang")
        give_grades(session, student, terms=8)
        # Committed first: issuing ends its read transaction before signing.
        session.commit()
        issuance = registry.issue(session, student, actor="bench")
        session.commit()
        issued = registry.stored_file(issuance), issuance.code
        db.session.remove()
        return issued


def serve(url: str, instance: str, port: int) -> None:
    import waitress

    # Read by the verification settings when the app is made.
    os.environ.update(NO_LIMITS)
    waitress.serve(
        make_app(url, instance, f"http://127.0.0.1:{port}"),
        host="127.0.0.1",
        port=port,
        threads=THREADS,
        _quiet=True,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(base: str) -> None:
    for _ in range(300):
        try:
            requests.get(base + "/healthz", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"server at {base} did not start")


def bare_validation(app, pdf: bytes) -> Callable[[], object]:  # type: ignore[no-untyped-def]
    """pyHanko's long-term validation of the file's signature, nothing around
    it, under the policy our validator uses offline."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation.ades import ades_lta_validation
    from pyhanko_certvalidator.ltv.types import ValidationTimingInfo

    from signing import signing_service

    spec = signing_service(app).validator.specification(False)

    def bare() -> object:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        signature = reader.embedded_regular_signatures[0]
        signature.compute_integrity_info(diff_policy=spec.diff_policy)
        now = dt.datetime.now(dt.UTC)
        return asyncio.run(
            ades_lta_validation(
                signature, spec, timing_info=ValidationTimingInfo(now, now, False)
            )
        )

    return bare


def upload(base: str, pdf: bytes) -> Callable[[], object]:
    http = requests.Session()

    def post() -> object:
        answer = http.post(
            base + "/api/verify",
            files={"file": ("transcript.pdf", pdf, "application/pdf")},
            timeout=60,
        )
        if answer.status_code != 200 or answer.json()["outcome"] != "authentic":
            raise SystemExit(f"upload answered {answer.status_code}: {answer.text}")
        return answer

    return post


def interleaved(
    first: Callable[[], object], second: Callable[[], object], rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of each, taking turns, so that both meet the same load
    on a shared machine. One warm-up call each first (the server's validation
    child starts on its first file)."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for run, into in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            run()
            into.append(time.perf_counter() - started)
    return times


def look_ups(base: str, code: str, seconds: float) -> dict[str, float]:
    """Code look-ups from ``CLIENTS`` threads for ``seconds``."""
    results: list[tuple[list[float], int]] = []

    def client() -> None:
        http = requests.Session()
        latencies, failures = [], 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            answer = http.get(f"{base}/api/verify/codes/{code}", timeout=30)
            latencies.append(time.perf_counter() - started)
            if answer.status_code != 200 or answer.json()["outcome"] != "registered":
                failures += 1
        results.append((latencies, failures))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(value for values, _ in results for value in values)
    return {
        "count": len(latencies),
        "failures": sum(failures for _, failures in results),
        "per_second": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="9 rounds, 3 s of look-ups"
    )
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--seconds", type=float, default=10)
    arguments = parser.parse_args()
    rounds = 9 if arguments.quick else arguments.rounds
    seconds = 3 if arguments.quick else arguments.seconds
    logging.basicConfig(level=logging.WARNING)
    from signing import QUIET_LOGGERS

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)

    instance = tempfile.mkdtemp(prefix="bench-verification-")
    url = create_database("verify")
    server = None
    try:
        app = make_app(url, instance)
        pdf, code = issue(app)
        port = _free_port()
        # Not a daemon: the server starts validation children of its own.
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(url, instance, port)
        )
        server.start()
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base)
        with app.app_context():
            ours_times, bare_times = interleaved(
                upload(base, pdf), bare_validation(app, pdf), rounds
            )
        codes = look_ups(base, code, seconds)
    finally:
        if server is not None:
            server.terminate()
            server.join()
        from campus.database import db

        if db.engine is not None:
            db.engine.dispose()
        drop_database(url)

    ours = statistics.median(ours_times)
    bare = statistics.median(bare_times)
    print(f"file: {len(pdf) / 1024:.0f} KiB, 3 pages, B-LTA; {rounds} rounds each")
    print(
        f"bare pyHanko ades_lta_validation: {bare * 1000:7.1f} ms/file "
        f"({1 / bare:5.2f} files/s)"
    )
    print(
        f"upload, POST /api/verify:         {ours * 1000:7.1f} ms/file "
        f"({1 / ours:5.2f} uploads/s), {ours / bare:.2f} x bare (goal <= 1.2)"
    )
    print(
        f"code look-ups, GET /api/verify/codes/<code>, {CLIENTS} clients: "
        f"{codes['per_second']:.1f} /s  p50 {codes['p50_ms']:.1f} ms  "
        f"p99 {codes['p99_ms']:.1f} ms  (failed answers: {codes['failures']})"
    )
    print(
        json.dumps(
            {
                "metric": "verification_upload_ms_per_file_b_lta",
                "value": round(ours * 1000, 1),
                "unit": "ms/file",
                "limit": "bare pyHanko ades_lta_validation of the same file, same "
                "run, interleaved (goal: ratio <= 1.2)",
                "limit_value": round(bare * 1000, 1),
                "ratio": round(ours / bare, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
