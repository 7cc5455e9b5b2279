"""Wallet payments per second through the signed terminal API, against raw psycopg.

Our side: ``POST /api/terminal/payments`` (a card tap, 1 fen) over HTTP to the real
app served by granian as the README's production section runs it (two worker
processes of eight threads, a process a core), 32 concurrent terminals each with
its own key and keep-alive connection, every request signed (HMAC, timestamp,
fresh nonce) and verified, the nonce remembered, the payment recorded, the wallet
debited to the merchant's payable, all on PostgreSQL. The terminals are threads in
four client processes.

The raw side: 32 workers (processes of threads) with psycopg connections running the
same SQL as the service for one payment, in the same run on the same database: one
transaction of the nonce insert (only while the terminal and merchant are enabled),
the card lock, the journal entry, its two conditional balance updates and postings,
and the payment's insert. The terminal's id, merchant and payable account are read
once per worker, as the service keeps them per process. No HTTP, no signature, no
ORM.

On either side every client process is started, has made its imports and set up
its terminals before any terminal pays: the clock and the count of CPU start
together for all of them, so that no process's start-up (a second of imports) is
counted as the other processes' work. Before each side's closed loop the database
is vacuumed and checkpointed (``settle``): the side measured second would
otherwise meet the dead rows of the first's balance updates.

Two measurements of our side, after two seconds of payments that are not counted
(each worker opens its pooled connections and prepares its statements, as each raw
worker connects and reads its terminal before its clock starts):

* **Closed loop (throughput).** Each of the 32 terminals pays again as soon as it has
  its answer, for ``--seconds`` (4 with ``--quick``); the same for the raw side.
  This is the rate the final line reports. Its latency is mostly queueing: with 32
  payments always in flight, latency ≈ 32 ÷ throughput, so a p99 of 50 ms would need
  more than 640 payments/s, which neither side reaches on two cores.
* **Open loop (a canteen at lunch).** Each terminal pays on a fixed schedule, one
  payment every ``--interval`` seconds (2; 32 terminals → 16 payments/s offered),
  each terminal starting at a random point of its first interval, for
  ``--open-seconds`` (20; 10 with ``--quick``). Latency is counted from the
  scheduled moment, so a payment that starts late because the previous one was slow
  counts its wait too. This is the latency a cashier sees; its p50/p99 are the goal
  ``p99 ≤ 50 ms``.

    python bench/pos.py [--quick] [--seconds 20] [--interval 2] [--open-seconds 20]
                        [--raw-connections 32]

Our server runs at most ``WORKERS`` × ``THREADS`` (16) payments' transactions at a
time, the raw side one per terminal (32): on eight merchants' payable rows, fewer
transactions at once wait less for each other's locks, so the raw side is faster
with fewer (about 10 % at 16, 30 % at 4 on the development machine).
``--raw-connections 16`` compares at the server's own number instead.

Needs PostgreSQL: DATABASE_URL, or postgresql+psycopg://postgres@127.0.0.1:5432/postgres.
Prints both sides with p50/p99 latency and the CPU each spent per payment of the
closed loop (the terminals' client processes, our granian server and its workers,
every PostgreSQL process: the shares of the two cores), then three JSON lines: the
closed loop's latency (``p50_ms``, ``p99_ms``, ``requests``, ``failed``, and the
raw side's); the open loop's (``mode`` ``open_loop``, ``offered_per_second``,
``p50_ms``, ``p99_ms``, ``max_ms``, ``requests``, ``failed``), the line before the
last; and the result, the last line (goal: ratio ≥ 0.5). Rates count succeeded
payments only; latency covers every request. Any failed request (an error, no
answer, or a payment not ``succeeded``) makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cpu as cpu_use  # noqa: E402  (bench/cpu.py)
import psycopg  # noqa: E402
import requests  # noqa: E402
from alembic import command as alembic_command  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from payments.pos.terminal_auth import sign  # noqa: E402

SERVER = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TERMINALS = 32
MERCHANTS = 8
PROCESSES = 4
"""Client processes (eight terminals each)."""
WORKERS = 2
THREADS = 8
"""granian worker processes and threads per process (README, production)."""
WARM_UP_SECONDS = 2
"""Payments before our side's clock starts (connections, statement caches)."""
BALANCE_FEN = 10**12
AMOUNT_FEN = 1
P99_GOAL_MS = 50
PAY_PATH = "/api/terminal/payments"


def create_database() -> str:
    from campus.database import db, make_engine

    server = make_url(SERVER)
    name = f"bench_pos_{uuid.uuid4().hex[:8]}"
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
    from campus.database import db, make_engine

    if db.engine is not None:
        db.engine.dispose()
    admin = make_engine(
        make_url(url).set(database="postgres").render_as_string(False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        name = make_url(url).database
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _app(url: str, instance: Path):  # type: ignore[no-untyped-def]
    from campus import create_app
    from campus.settings import Settings

    return create_app(
        Settings(
            database_url=url,
            instance_path=instance,
            scheduler=False,
            log_level="WARNING",
            # Wallet payments call no channel: no sandbox to start, no keys to make.
            channels="live",
        )
    )


def prepare(url: str, instance: Path):  # type: ignore[no-untyped-def]
    """Merchants, one terminal and one rich card per worker: (key, secret, card)."""
    from campus.database import db
    from campus.people import Person, PersonKind
    from payments import ledger
    from payments.cards import open_card
    from payments.merchants import MerchantKind, add_terminal, open_merchant

    app = _app(url, instance)
    terminals = []
    with app.app_context(), db.transaction() as session:
        merchants = [
            open_merchant(
                session, f"B{i}", "窗口", "window", MerchantKind.CANTEEN_WINDOW
            )
            for i in range(MERCHANTS)
        ]
        for index in range(TERMINALS):
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
                source=ledger.suspense_account(session),
                destination=card.wallet,
                amount_fen=BALANCE_FEN,
            )
            terminal = add_terminal(session, merchants[index % MERCHANTS], f"t{index}")
            terminals.append((terminal.key_id, terminal.secret, card.number))
    return app, terminals


# -- our side: granian + the signed API -------------------------------------------


def start_server(url: str, instance: str, port: int) -> subprocess.Popen[bytes]:
    """The app under granian as the README's production section runs it:
    ``WORKERS`` processes of ``THREADS`` threads, keep-alive connections; its
    settings from the environment, as ``wsgi.py`` reads them."""
    environment = dict(
        os.environ,
        CAMPUS_DATABASE_URL=url,
        CAMPUS_INSTANCE_PATH=instance,
        CAMPUS_SCHEDULER="off",
        # Wallet payments call no channel: no sandbox to start, no keys to make.
        CAMPUS_CHANNELS="live",
        CAMPUS_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            str(WORKERS),
            "--blocking-threads",
            str(THREADS),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "wsgi:app",
        ],  # fmt: skip
        env=environment,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(base: str) -> None:
    for _ in range(300):
        try:
            requests.get(base + "/healthz", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"server at {base} did not start")


def http_terminal(
    base: str,
    terminal: tuple[str, str, str],
    seconds: float,
    results: list,
    starting: Starting,
    interval: float | None = None,
) -> None:
    """Pay back to back (``interval`` None), or once every ``interval`` seconds
    from a random start, timing each payment from its scheduled moment.

    A terminal is a plain keep-alive HTTP/1.1 connection (``Terminal``), as a
    POS device's firmware is: the terminals share the service's two cores here,
    and a heavier client would be measured as the service's slowness (``requests``
    costs about a millisecond of CPU a request, ``http.client`` 0.3 ms, this one
    0.15 ms)."""
    key_id, secret, card = terminal
    address = urlsplit(base)
    # Connected on the first request, as before the start barrier: the open
    # loop's terminals then start at their scheduled moments.
    http = Terminal(address.hostname or "127.0.0.1", address.port or 80)
    latencies, failures = [], 0
    starting.ready_and_wait()
    start = time.perf_counter()
    deadline = start + seconds
    scheduled = start + (random.uniform(0, interval) if interval else 0)
    while True:
        if interval is not None:
            if scheduled >= deadline:
                break
            time.sleep(max(scheduled - time.perf_counter(), 0))
        elif time.perf_counter() >= deadline:
            break
        body = json.dumps(
            {
                "order_no": secrets.token_hex(8),
                "amount_fen": AMOUNT_FEN,
                "card_number": card,
            }
        ).encode()
        headers = sign(secret, "POST", PAY_PATH, body, key_id=key_id)
        headers["Content-Type"] = "application/json"
        started = scheduled if interval is not None else time.perf_counter()
        try:
            status, content = http.post(PAY_PATH, headers, body)
            paid = status == 200 and json.loads(content)["state"] == "succeeded"
        except (OSError, HTTPException, ValueError, KeyError):
            # No answer, or not a payment's: a failed request like any other.
            paid = False
            http.close()
        latencies.append(time.perf_counter() - started)
        failures += not paid
        if interval is not None:
            scheduled += interval
    http.close()
    results.append((latencies, failures))


class Terminal:
    """HTTP/1.1 over one keep-alive socket, as little as a POS device needs: the
    request written in one send, the answer's status line and headers read, and
    its body to its Content-Length. Anything else (no Content-Length, a closed
    connection) raises, and the payment counts as failed."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._host = f"Host: {host}:{port}\r\n".encode()
        self._socket: socket.socket | None = None

    def post(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if self._socket is None:
            self._socket = socket.create_connection(self._address, timeout=30)
            self._answers = self._socket.makefile("rb")
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._socket.sendall(
            b"POST " + path.encode() + b" HTTP/1.1\r\n" + self._host
            + f"Content-Length: {len(body)}\r\n{head}\r\n".encode() + body
        )  # fmt: skip
        status_line = self._answers.readline()
        if not status_line.startswith(b"HTTP/1.1 "):
            raise HTTPException(f"not an HTTP/1.1 answer: {status_line[:40]!r}")
        length = None
        while (line := self._answers.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if length is None:
            raise HTTPException("an answer without Content-Length")
        content = self._answers.read(length)
        if len(content) != length:
            raise HTTPException("the connection closed inside an answer")
        return int(status_line.split()[1]), content

    def close(self) -> None:
        if self._socket is not None:
            self._answers.close()
            self._socket.close()
            self._socket = None


# -- the raw side -------------------------------------------------------------------


def raw_terminal(
    url: str,
    terminal: tuple[str, str, str],
    seconds: float,
    results: list,
    starting: Starting,
) -> None:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
    key_id, _, card = terminal
    latencies: list[float] = []
    try:
        with psycopg.connect(conninfo) as connection:
            # Read once, as the service keeps a terminal's ids per process.
            with connection.transaction():
                row = connection.execute(
                    "SELECT t.id, t.merchant_id, m.payable_account_id FROM terminals "
                    "t JOIN merchants m ON t.merchant_id = m.id WHERE t.key_id = %s",
                    (key_id,),
                ).fetchone()
            assert row is not None
            starting.ready_and_wait()
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    _raw_payment(connection, row, card)
                finally:
                    # A failed attempt's time too: the rate subtracts failures.
                    latencies.append(time.perf_counter() - started)
    except (psycopg.Error, AssertionError):
        # Counted, not raised: the run says it failed and exits non-zero.
        results.append((latencies, 1))
        return
    results.append((latencies, 0))


def _raw_payment(
    connection: psycopg.Connection, terminal: tuple[int, int, int], card: str
) -> None:
    """One payment, as the service makes it, in plain SQL: the same statements
    in the same single transaction."""
    terminal_id, merchant_id, payable = terminal
    order_no, out = secrets.token_hex(8), "R" + secrets.token_hex(12)
    with connection.transaction():
        remembered = connection.execute(
            "INSERT INTO pos_terminal_nonces (terminal_id, nonce, expires_at) "
            "SELECT t.id, %s, now() + interval '10 minutes' FROM terminals t "
            "JOIN merchants m ON t.merchant_id = m.id "
            "WHERE t.id = %s AND t.enabled AND m.active RETURNING terminal_id",
            (secrets.token_urlsafe(18), terminal_id),
        ).fetchone()
        assert remembered is not None
        card_id, status, wallet = connection.execute(
            "SELECT c.id, c.status, a.id FROM cards c JOIN accounts a ON "
            "c.wallet_account_id = a.id WHERE c.number = %s FOR UPDATE OF c",
            (card,),
        ).fetchone()
        assert status == "active"
        entry = connection.execute(
            "INSERT INTO journal_entries (kind, idempotency_ref, order_ref, memo, "
            "created_by, created_at) VALUES ('payment', %s, %s, 'bench', 'bench', "
            "now()) RETURNING id",
            (f"pos:{out}", out),
        ).fetchone()[0]
        for account, delta in sorted([(wallet, -AMOUNT_FEN), (payable, AMOUNT_FEN)]):
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
        connection.execute(
            "INSERT INTO pos_payments (out_trade_no, merchant_id, terminal_id, "
            "terminal_order_no, request_hash, source, channel, amount_fen, "
            "refunded_fen, state, description, created_at, needs_review, entry_id, "
            "card_id, paid_at, finished_at) "
            "VALUES (%s, %s, %s, %s, %s, 'tap', 'campus', %s, 0, 'succeeded', "
            "'bench', now(), false, %s, %s, now(), now()) RETURNING id",
            (
                out,
                merchant_id,
                terminal_id,
                order_no,
                "h" * 64,
                AMOUNT_FEN,
                entry,
                card_id,
            ),
        )


class Starting:
    """Every terminal of a process connected and ready before any pays: the
    clock, and the count of CPU spent, start once every client process is set
    up (its imports, its connections), so that no process's start-up is
    measured as the other side's work."""

    def __init__(self, terminals: int) -> None:
        self._all_ready = threading.Barrier(terminals + 1)
        self._go = threading.Event()

    def ready_and_wait(self) -> None:
        try:
            self._all_ready.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass  # the process reports the terminal that never got ready
        self._go.wait()

    def all_ready(self) -> None:
        self._all_ready.wait(timeout=60)

    def go(self) -> None:
        self._go.set()


def client_process(
    side: str,
    target: str,
    terminals: list,
    seconds: float,
    ready,  # type: ignore[no-untyped-def]
    go,  # type: ignore[no-untyped-def]
    queue,  # type: ignore[no-untyped-def]
    interval: float | None = None,
) -> None:
    import logging

    logging.disable(logging.INFO)
    results: list = []
    starting = Starting(len(terminals))
    threads = [
        threading.Thread(
            target=http_terminal,
            args=(target, terminal, seconds, results, starting, interval),
        )
        if side == "service"
        else threading.Thread(
            target=raw_terminal, args=(target, terminal, seconds, results, starting)
        )
        for terminal in terminals
    ]
    for thread in threads:
        thread.start()
    starting.all_ready()
    ready.put(os.getpid())
    go.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)
    starting.go()
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    # The terminals' own CPU from the common start, not their set-up.
    spent = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    queue.put((results, spent))


def measure(
    side: str,
    targets: list[str],
    terminals: list,
    seconds: float,
    interval: float | None = None,
    server: int | None = None,
) -> dict:
    """Run the terminals of ``side`` for ``seconds``, all starting together once
    every client process is ready; the rates, latencies and the CPU seconds
    spent meanwhile by the clients, PostgreSQL and the ``server`` process with
    its workers."""
    context = multiprocessing.get_context("spawn")
    queue, ready, go = context.Queue(), context.Queue(), context.Event()
    share = len(terminals) // PROCESSES
    children = [
        context.Process(
            target=client_process,
            args=(
                side,
                targets[index % len(targets)],
                terminals[index * share : (index + 1) * share],
                seconds,
                ready,
                go,
                queue,
                interval,
            ),
        )
        for index in range(PROCESSES)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    database_cpu = cpu_use.postgres_seconds()
    server_cpu = cpu_use.tree_seconds(server) if server else 0.0
    go.set()
    reports = [queue.get() for _ in children]
    database_cpu = cpu_use.postgres_seconds() - database_cpu
    server_cpu = cpu_use.tree_seconds(server) - server_cpu if server else 0.0
    for child in children:
        child.join()
    gathered = [item for results, _ in reports for item in results]
    # Latency over every request (the cashier waits for a failed one too); the
    # rate over payments that succeeded only.
    latencies = sorted(value for values, _ in gathered for value in values)
    failures = sum(failures for _, failures in gathered)
    if not latencies:
        latencies = [float("nan")]
    return {
        "requests": len(latencies),
        "failures": failures,
        "per_second": max(len(latencies) - failures, 0) / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
        "max_ms": latencies[-1] * 1000,
        "cpu_s": {
            "clients": sum(spent for _, spent in reports),
            **({"server": server_cpu} if server else {}),
            "postgres": database_cpu,
        },
    }


def settle(url: str) -> None:
    """The database as the previous side left it, made fit for the next: the
    dead rows of a few hundred thousand balance updates vacuumed, and a checkpoint
    taken, so that neither side pays for the other's writes."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        connection.execute("CHECKPOINT")


def check(app) -> None:  # type: ignore[no-untyped-def]
    from campus.database import db
    from payments.ledger import check_ledger

    with app.app_context():
        problems = check_ledger(db.session)
    if problems:
        raise SystemExit(f"ledger does not balance after the run: {problems[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="closed loop 4 s per side, open loop 10 s"
    )
    parser.add_argument("--seconds", type=float, default=20, help="closed loop")
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="open loop: seconds between two payments of one terminal",
    )
    parser.add_argument("--open-seconds", type=float, default=20, help="open loop")
    parser.add_argument(
        "--raw-connections",
        type=int,
        default=TERMINALS,
        help="raw side's workers (default: one per terminal, 32)",
    )
    arguments = parser.parse_args()
    seconds = 4 if arguments.quick else arguments.seconds
    open_seconds = 10 if arguments.quick else arguments.open_seconds
    interval = arguments.interval
    import logging

    logging.disable(logging.INFO)

    instance = Path(tempfile.mkdtemp(prefix="bench-pos-"))
    url = create_database()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        app, terminals = prepare(url, instance)
        settle(url)
        raw = measure("raw", [url], terminals[: arguments.raw_connections], seconds)

        port = _free_port()
        server = start_server(url, str(instance), port)
        servers.append(server)
        bases = [f"http://127.0.0.1:{port}"]
        _wait_until_up(bases[0])
        # Not counted: each server opens its pooled connections and prepares its
        # statements, as the raw workers connect before their clock starts.
        measure("service", bases, terminals, WARM_UP_SECONDS)
        settle(url)
        ours = measure("service", bases, terminals, seconds, server=server.pid)
        # After the closed loop, so that every worker is warm, as at lunch.
        lunch = measure("service", bases, terminals, open_seconds, interval)
        check(app)
    finally:
        for server in servers:
            stop_server(server)
        drop_database(url)
        shutil.rmtree(instance, ignore_errors=True)

    print(
        f"raw psycopg:      {raw['per_second']:8.1f} payments/s  "
        f"p50 {raw['p50_ms']:.1f} ms  p99 {raw['p99_ms']:.1f} ms"
    )
    print(
        f"signed HTTP API:  {ours['per_second']:8.1f} payments/s  "
        f"p50 {ours['p50_ms']:.1f} ms  p99 {ours['p99_ms']:.1f} ms  "
        f"(failed answers: {ours['failures']})"
    )
    for name, side in (("raw", raw), ("ours", ours)):
        paid = max(side["per_second"] * seconds, 1)
        spent = side["cpu_s"]
        print(
            f"CPU per payment, {name}: "
            + ", ".join(
                f"{part} {value / paid * 1000:.2f} ms" for part, value in spent.items()
            )
            + f" (of {os.cpu_count()} cores)"
        )
    print(
        f"open loop:        {lunch['per_second']:8.1f} payments/s offered "
        f"{TERMINALS / interval:.1f}  p50 {lunch['p50_ms']:.1f} ms  "
        f"p99 {lunch['p99_ms']:.1f} ms  max {lunch['max_ms']:.1f} ms  "
        f"(failed answers: {lunch['failures']})"
    )
    # Three JSON objects at the end, for scripts: the closed loop's latency
    # (`tail -3 | head -1`), the open loop's (`tail -2 | head -1`), the result.
    print(
        json.dumps(
            {
                "p50_ms": round(ours["p50_ms"], 1),
                "p99_ms": round(ours["p99_ms"], 1),
                "p99_limit_ms": P99_GOAL_MS,
                "requests": ours["requests"],
                "failed": ours["failures"],
                "raw_p50_ms": round(raw["p50_ms"], 1),
                "raw_p99_ms": round(raw["p99_ms"], 1),
                "raw_failed": raw["failures"],
            }
        )
    )
    print(
        json.dumps(
            {
                "mode": "open_loop",
                "terminals": TERMINALS,
                "interval_s": interval,
                "offered_per_second": round(TERMINALS / interval, 1),
                "p50_ms": round(lunch["p50_ms"], 1),
                "p99_ms": round(lunch["p99_ms"], 1),
                "p99_limit_ms": P99_GOAL_MS,
                "max_ms": round(lunch["max_ms"], 1),
                "requests": lunch["requests"],
                "failed": lunch["failures"],
            }
        )
    )
    print(
        json.dumps(
            {
                "metric": "pos_wallet_payments_per_second_32_terminals_postgresql",
                "value": round(ours["per_second"], 1),
                "unit": "payments/s",
                "limit": "raw psycopg running the same SQL at the same concurrency",
                "limit_value": round(raw["per_second"], 1),
                "ratio": round(ours["per_second"] / raw["per_second"], 3)
                if raw["per_second"]
                else 0.0,
            }
        )
    )
    if ours["failures"] or raw["failures"] or lunch["failures"]:
        print(
            f"{ours['failures']} requests failed, {lunch['failures']} in the open "
            f"loop ({raw['failures']} raw workers)",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()
