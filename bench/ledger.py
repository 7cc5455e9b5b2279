"""Wallet debits per second through our service layer, against raw psycopg.

Both sides run on PostgreSQL at the same concurrency (32 workers: processes of
threads, so that Python's GIL is not what is measured), in the same run, on
databases prepared identically: one card per worker with a large balance, and eight
merchants whose payable accounts all workers share, as at a canteen at noon. The raw
side runs the statements our service emits for one debit: lock the card, look for the
idempotency reference, insert the entry, conditionally update both balances in
account order, insert both postings, commit. Log records below WARNING are off on
both sides, as the raw side writes none.

    python bench/ledger.py [--quick] [--workers 32] [--seconds 20]

Needs PostgreSQL: DATABASE_URL, or postgresql+psycopg://postgres@127.0.0.1:5432/postgres.
The last line printed is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from alembic import command as alembic_command  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

SERVER = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MERCHANTS = 8
BALANCE_FEN = 10**12
AMOUNT_FEN = 1


def create_database(tag: str) -> str:
    from campus.database import db, make_engine

    server = make_url(SERVER)
    name = f"bench_ledger_{tag}_{uuid.uuid4().hex[:6]}"
    admin = make_engine(
        server.set(database="postgres").render_as_string(False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = server.set(database=name).render_as_string(False)
    db.bind(make_engine(url))
    alembic_command.upgrade(db.alembic_config(), "heads")
    return url


def drop_database(url: str) -> None:
    from campus.database import make_engine

    name = make_url(url).database
    admin = make_engine(
        make_url(url).set(database="postgres").render_as_string(False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def prepare(url: str, workers: int) -> None:
    from campus import create_app
    from campus.database import db
    from campus.people import Person, PersonKind
    from campus.settings import Settings
    from payments import ledger
    from payments.cards import open_card
    from payments.merchants import MerchantKind, open_merchant

    app = create_app(
        Settings(
            database_url=url,
            instance_path=Path(tempfile.mkdtemp()),
            scheduler=False,
            log_level="WARNING",
        )
    )
    with app.app_context(), db.transaction() as session:
        source = ledger.suspense_account(session)
        for index in range(MERCHANTS):
            open_merchant(
                session, f"B{index}", "窗口", "window", MerchantKind.CANTEEN_WINDOW
            )
        for index in range(workers):
            person = Person(
                number=f"B{index:05d}",
                kind=PersonKind.STUDENT,
                name_zh="压测",
                name_en="Bench",
            )
            session.add(person)
            card = open_card(session, person, actor="bench", number=f"5500{index:08d}")
            ledger.transfer(
                session,
                kind=ledger.EntryKind.OPENING,
                idempotency_ref=f"opening:{card.number}",
                source=source,
                destination=card.wallet,
                amount_fen=BALANCE_FEN,
            )


# -- one side each -----------------------------------------------------------------


def service_worker(url: str, worker: int, seconds: float, results: list) -> None:
    from campus.database import db
    from payments.merchants import payable_of
    from payments.wallet import pay_from_wallet

    card_number = f"5500{worker:08d}"
    merchant_code = f"B{worker % MERCHANTS}"
    latencies = []
    deadline = time.perf_counter() + seconds
    sequence = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        session = db.new_session()
        try:
            payable = payable_of(session, merchant_code)
            pay_from_wallet(
                session,
                card_number,
                payable,
                AMOUNT_FEN,
                idempotency_ref=f"svc:{worker}:{sequence}",
                order_ref=f"svc{worker}-{sequence}",
            )
            session.commit()
        finally:
            session.close()
        latencies.append(time.perf_counter() - started)
        sequence += 1
    results.append(latencies)


def raw_worker(url: str, worker: int, seconds: float, results: list) -> None:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
    card_number = f"5500{worker:08d}"
    merchant_code = f"B{worker % MERCHANTS}"
    latencies = []
    with psycopg.connect(conninfo) as connection:
        payable = connection.execute(
            "SELECT payable_account_id FROM merchants WHERE code = %s", (merchant_code,)
        ).fetchone()[0]
        connection.commit()
        deadline = time.perf_counter() + seconds
        sequence = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            reference = f"raw:{worker}:{sequence}"
            with connection.transaction():
                connection.execute(
                    "SELECT a.id, a.code, a.allow_negative FROM merchants m JOIN "
                    "accounts a ON m.payable_account_id = a.id WHERE m.code = %s "
                    "AND m.active",
                    (merchant_code,),
                )
                card_id, status, wallet, _, _ = connection.execute(
                    "SELECT c.id, c.status, a.id, a.code, a.allow_negative "
                    "FROM cards c "
                    "JOIN accounts a ON c.wallet_account_id = a.id WHERE c.number = %s "
                    "FOR UPDATE OF c",
                    (card_number,),
                ).fetchone()
                assert status == "active"
                connection.execute(
                    "SELECT id FROM journal_entries WHERE idempotency_ref = %s",
                    (reference,),
                )
                connection.execute("SAVEPOINT entry")
                entry = connection.execute(
                    "INSERT INTO journal_entries (kind, idempotency_ref, order_ref, "
                    "created_at) VALUES ('payment', %s, %s, now()) RETURNING id",
                    (reference, f"raw{worker}-{sequence}"),
                ).fetchone()[0]
                for account, delta in sorted(
                    [(wallet, -AMOUNT_FEN), (payable, AMOUNT_FEN)]
                ):
                    condition = " AND balance_fen >= %s" if delta < 0 else ""
                    parameters = (delta, account) + ((-delta,) if delta < 0 else ())
                    row = connection.execute(
                        "UPDATE accounts SET balance_fen = balance_fen + %s "
                        f"WHERE id = %s{condition} RETURNING balance_fen",
                        parameters,
                    ).fetchone()
                    assert row is not None
                connection.execute(
                    "INSERT INTO postings (entry_id, account_id, amount_fen) "
                    "VALUES (%s, %s, %s), (%s, %s, %s)",
                    (entry, wallet, -AMOUNT_FEN, entry, payable, AMOUNT_FEN),
                )
                connection.execute("RELEASE SAVEPOINT entry")
            latencies.append(time.perf_counter() - started)
            sequence += 1
    results.append(latencies)


def run_process(
    side: str, url: str, first: int, threads: int, seconds: float, queue
) -> None:  # type: ignore[no-untyped-def]
    import logging

    logging.disable(logging.INFO)
    if side == "service":
        from campus.database import db, make_engine

        db.bind(make_engine(url, pool_size=threads, max_overflow=0))
        target = service_worker
    else:
        target = raw_worker
    results: list = []
    workers = [
        threading.Thread(target=target, args=(url, first + index, seconds, results))
        for index in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put([value for latencies in results for value in latencies])


def measure(side: str, url: str, workers: int, processes: int, seconds: float) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    per_process = workers // processes
    children = [
        context.Process(
            target=run_process,
            args=(side, url, index * per_process, per_process, seconds, queue),
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    latencies = [value for _ in children for value in queue.get()]
    for child in children:
        child.join()
    latencies.sort()
    return {
        "debits": len(latencies),
        "per_second": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000
        if latencies
        else 0.0,
    }


def combine(parts: list[dict], seconds: float) -> dict:
    debits = sum(part["debits"] for part in parts)
    return {
        "debits": debits,
        "per_second": debits / seconds,
        "p50_ms": statistics.median(part["p50_ms"] for part in parts),
        "p99_ms": max(part["p99_ms"] for part in parts),
    }


def check(url: str) -> None:
    from campus import create_app
    from campus.database import db
    from campus.settings import Settings
    from payments.ledger import check_ledger

    app = create_app(
        Settings(
            database_url=url,
            instance_path=Path(tempfile.mkdtemp()),
            scheduler=False,
            log_level="WARNING",
        )
    )
    with app.app_context():
        problems = check_ledger(db.session)
    if problems:
        raise SystemExit(f"ledger does not balance after the run: {problems[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 s per side")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    arguments = parser.parse_args()
    seconds = 8 if arguments.quick else arguments.seconds

    url = create_database("run")
    try:
        prepare(url, arguments.workers)
        # Alternating rounds, so that both sides meet the same machine load (other
        # work on a 2-core machine penalises the side that needs more CPU).
        rounds = 2 if arguments.quick else 4
        results: dict[str, list[dict]] = {"raw": [], "service": []}
        for _ in range(rounds):
            for side in ("raw", "service"):
                results[side].append(
                    measure(
                        side,
                        url,
                        arguments.workers,
                        arguments.processes,
                        seconds / rounds,
                    )
                )
        raw, ours = (combine(results[side], seconds) for side in ("raw", "service"))
        check(url)
    finally:
        from campus.database import db

        db.engine.dispose()
        drop_database(url)

    print(
        f"raw psycopg:   {raw['per_second']:8.1f} debits/s  p50 {raw['p50_ms']:.1f} ms"
        f"  p99 {raw['p99_ms']:.1f} ms"
    )
    print(
        f"service layer: {ours['per_second']:8.1f} debits/s"
        f"  p50 {ours['p50_ms']:.1f} ms"
        f"  p99 {ours['p99_ms']:.1f} ms"
    )
    print(
        json.dumps(
            {
                "metric": "wallet_debits_per_second_32_workers_postgresql",
                "value": round(ours["per_second"], 1),
                "unit": "debits/s",
                "limit": (
                    "raw psycopg running the same statements at the same concurrency"
                ),
                "limit_value": round(raw["per_second"], 1),
                "ratio": round(ours["per_second"] / raw["per_second"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
