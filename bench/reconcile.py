"""A day's WeChat Pay bill reconciled, against merely reading and splitting it.

Our path: ``reconcile_day`` for one day, given a generated trade bill of N lines in
the sandbox's format (official Chinese columns, back-quoted fields, the summary
section) as the already-downloaded ``Bill``, against N paid top-ups on PostgreSQL.
It parses and checks the bill, loads our orders, matches both ways, records what
does not match and books the day's fees: everything a nightly run does except the
download. The limit: reading the same file and splitting each line into its
fields, nothing more. Both run in the same run, each in a fresh process of its
own (spawned, so neither inherits the other's memory); peak memory is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the process that ran our path,
which includes the interpreter, Flask app, SQLAlchemy and Arrow (about 190 MiB)
and the bill itself (a quarter of a GiB, held from the download to the end). The
bill is read into columns by a thread while the day's orders load, and matched
against them by column (``reconciliation/bills/columns.py``,
``DayMatch.take_columns``); the CPU the run's process and PostgreSQL spent
meanwhile is printed too. The bill's sha256 is worked out before the clock starts,
as the channel adapter does while downloading; the run checks it again.

Every line of the generated bill matches its order, so the run records nothing but
the fee booking: the benchmark measures the work every day has, not repairs.

    python bench/reconcile.py [--quick] [--lines 1000000]

Each side runs three times (the day's run forgotten in between) and the medians
are compared; ``--quick`` compares one run of each. Before those, each side runs
once more, and that first round is printed but not compared: on the virtual
machines this was measured on, memory the guest freed goes back to the host,
and touching it again costs several microseconds a page (``mmap`` and touch a GiB
in two processes a second apart: 0.6 to 2.9 s each). The first run after the
bench has made a quarter of a GiB of bill and a million rows pays that for much
of the 0.6 GiB it allocates: 2.2 to 2.6 s where the runs after it took 1.9 to
2.2 s. The runs after it measure our code; the first says what a night on such a
machine may cost. A million lines, the goal's
size, either way: under a minute with ``--quick``, a third of it making the bill
and orders.
Needs PostgreSQL: DATABASE_URL, or
postgresql+psycopg://postgres@127.0.0.1:5432/postgres. The last line printed is
the result as one JSON object; peak memory is on the line before it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cpu as cpu_use  # noqa: E402  (bench/cpu.py)
from ledger import create_database, drop_database  # noqa: E402  (bench/ledger.py)
from notifications import make_app  # noqa: E402  (bench/notifications.py)

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2031, 6, 1)
MEMORY_GOAL_MIB = 1024
TIME_GOAL = 3.0

HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,"
    "交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,"
    "商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
ROW = (
    "`{at},`wx8888888888888888,`1900000109,`0,`,`{transaction_id},`{out_trade_no},"
    "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`{yuan},`0.00,`0,"
    "`0,`0.00,`0.00,`,`,`校园卡充值 card top-up,`,`{fee},`0.60%,`{yuan},`0.00,`"
)
SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,"
    "申请退款总金额"
)


def yuan(fen: int, places: int = 2) -> str:
    whole, part = divmod(fen, 100)
    return f"{whole}.{part:02d}" + "0" * (places - 2)


def amount_of(index: int) -> int:
    return 100 + (index * 7919) % 19_900


def fee_of(amount_fen: int) -> int:
    return (amount_fen * 60 + 5_000) // 10_000


def out_trade_no(index: int) -> str:
    return f"T20310601{index:016d}"


def transaction_id(index: int) -> str:
    return f"4200002031060{index:015d}"


def paid_at(index: int, count: int) -> dt.datetime:
    start = dt.datetime.combine(DAY, dt.time(), SHANGHAI)
    return start + dt.timedelta(seconds=index * 86_399 // count)


def write_bill(path: Path, count: int) -> None:
    """The bill as WeChat Pay writes it: CRLF lines, summary at the end."""
    settled = fees = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\r\n")
        chunk: list[str] = []
        for index in range(count):
            amount = amount_of(index)
            fee = fee_of(amount)
            settled += amount
            fees += fee
            at = paid_at(index, count).strftime("%Y-%m-%d %H:%M:%S")
            chunk.append(
                ROW.format(
                    at=at,
                    transaction_id=transaction_id(index),
                    out_trade_no=out_trade_no(index),
                    yuan=yuan(amount),
                    fee=yuan(fee, 5),
                )
            )
            if len(chunk) == 10_000:
                out.write("\r\n".join(chunk) + "\r\n")
                chunk.clear()
        if chunk:
            out.write("\r\n".join(chunk) + "\r\n")
        out.write(SUMMARY_HEADER + "\r\n")
        summary = (
            str(count),
            yuan(settled),
            "0.00",
            "0.00",
            yuan(fees, 5),
            yuan(settled),
            "0.00",
        )
        out.write(",".join("`" + cell for cell in summary) + "\r\n")


def prepare(url: str, instance: str, count: int) -> None:
    """One card and ``count`` top-ups paid on the bill's day, by COPY."""
    import psycopg
    from sqlalchemy.engine import make_url

    from campus.database import db
    from campus.people import Person, PersonKind
    from payments.cards import open_card

    app = make_app(url, instance)
    with app.app_context(), db.transaction() as session:
        person = Person(
            number="R00001", kind=PersonKind.STUDENT, name_zh="对账", name_en="Bench"
        )
        session.add(person)
        card = open_card(session, person, actor="bench", number="550000000001")
        session.flush()
        card_id = card.id
    plain = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(plain) as connection:
        with connection.cursor().copy(
            "COPY top_ups (out_trade_no, card_id, channel, payer_kind, amount_fen,"
            " state, transaction_id, created_at, expires_at, paid_at, finished_at,"
            " needs_review) FROM STDIN"
        ) as copy:
            for index in range(count):
                at = paid_at(index, count).isoformat()
                copy.write_row(
                    (
                        out_trade_no(index),
                        card_id,
                        "wechat",
                        "desktop",
                        amount_of(index),
                        "succeeded",
                        transaction_id(index),
                        at,
                        at,
                        at,
                        at,
                        False,
                    )
                )
        connection.commit()
        # The next morning, autovacuum has been through a table that took a
        # million inserts: the run reads it as it would be then, not with every
        # row's hint bits still to set (a first reader's extra second).
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE top_ups")


def read_and_split(path: str, queue) -> None:  # type: ignore[no-untyped-def]
    """The limit: every line of the file read and split into its fields."""
    started = time.perf_counter()
    fields = 0
    with open(path, encoding="utf-8", newline="") as bill:
        for line in bill:
            fields += len(line.split(","))
    seconds = time.perf_counter() - started
    queue.put({"seconds": seconds, "fields": fields, "maxrss_kib": _maxrss()})


def reconcile(url: str, instance: str, path: str, queue) -> None:  # type: ignore[no-untyped-def]
    """Our path: the real run of the day, given the bill as downloaded."""
    import hashlib

    from payments.channels.base import Bill
    from reconciliation.run import reconcile_day

    app = make_app(url, instance)
    now = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(11), SHANGHAI)
    with app.app_context():
        # The checksum the channel adapter works out as it downloads: the
        # download is not timed. The run checks the bill against it again.
        with open(path, "rb") as downloaded:
            sha256 = hashlib.file_digest(downloaded, "sha256").hexdigest()
        baseline = _maxrss()
        database_cpu = cpu_use.postgres_seconds()
        cpu = time.process_time()
        started = time.perf_counter()
        content = Path(path).read_bytes()
        bill = Bill(
            channel="wechat",
            day=DAY,
            content=content,
            filename="trade_bill_all.csv",
            sha256=sha256,
        )
        del content
        report = reconcile_day("wechat", DAY, bill=bill, now=now, batch=5000)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        database_cpu = cpu_use.postgres_seconds() - database_cpu
    queue.put(
        {
            "seconds": seconds,
            "lines": report.lines,
            "counts": report.counts,
            "state": report.state.value,
            "baseline_kib": baseline,
            "maxrss_kib": _maxrss(),
            "cpu_s": cpu,
            "database_cpu_s": database_cpu,
        }
    )


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def in_process(target, *args):  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed: exit code {process.exitcode}")
    return result


def _settle(url: str) -> None:
    """The machine as it is at half past ten the next morning, not a second after
    the bench wrote a quarter of a GiB of bill and a million rows: PostgreSQL's
    dirty pages checkpointed and the files' written to disk, so that neither side
    is timed while the kernel still writes them back."""
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute("CHECKPOINT")
    os.sync()


def _again(url: str) -> None:
    """Forget the day's run, so that the next one does it all again (its fee entry
    stays: booking it again finds it, as a re-run of a day does)."""
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(plain, autocommit=True) as connection:
        for table in ("discrepancies", "channel_fees", "reconciliation_runs"):
            connection.execute(f"DELETE FROM {table}")


def _median(results: list[dict]) -> tuple[dict, str]:
    """The run of median time, and the times of every run when there were
    several."""
    ordered = sorted(results, key=lambda result: result["seconds"])
    if len(results) == 1:
        return ordered[0], ""
    times = ", ".join(f"{result['seconds']:.2f}" for result in results)
    return ordered[len(results) // 2], f", median of {len(results)}: {times}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one compared run, not three"
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    options = parser.parse_args()
    count = options.lines
    runs = 1 if options.quick else 3

    instance = tempfile.mkdtemp(prefix="bench-reconcile-")
    path = Path(instance) / "bill.csv"
    started = time.perf_counter()
    write_bill(path, count)
    url = create_database("reconcile")
    limits, results = [], []
    try:
        prepare(url, instance, count)
        print(
            f"prepared {count:,} bill lines ({path.stat().st_size / 2**20:.0f} MiB)"
            f" and {count:,} paid top-ups in {time.perf_counter() - started:.1f} s"
        )
        # A first round of each side, reported but not compared: see the
        # docstring.
        for run in range(1 + runs):
            if run:
                _again(url)
            _settle(url)
            limits.append(in_process(read_and_split, str(path)))
            # An instance of its own, so that every run keeps the bill afresh.
            kept = tempfile.mkdtemp(prefix="run-", dir=instance)
            results.append(in_process(reconcile, url, kept, str(path)))
    finally:
        drop_database(url)
        # The bill and its kept copies: half a GiB a run.
        shutil.rmtree(instance, ignore_errors=True)
    for ours in results:
        if ours["state"] != "finished" or ours["lines"] != count:
            raise SystemExit(f"the run did not finish every line: {ours}")
        if ours["counts"].get("matched") != count:
            raise SystemExit(f"not every line matched: {ours['counts']}")
    first_limit, first = limits.pop(0), results.pop(0)
    limit, limit_runs = _median(limits)
    ours, our_runs = _median(results)
    peak = max(result["maxrss_kib"] for result in (first, *results)) / 1024
    print(
        f"first round, not compared: read and split {first_limit['seconds']:.2f} s,"
        f" reconcile_day {first['seconds']:.2f} s"
        f" ({first['seconds'] / first_limit['seconds']:.2f}x,"
        f" {first['cpu_s']:.2f} s CPU)"
    )
    print(
        f"read and split: {limit['seconds']:8.2f} s ({limit['fields']:,} fields)"
        + limit_runs
    )
    print(f"reconcile_day:  {ours['seconds']:8.2f} s {ours['counts']}" + our_runs)
    print(
        f"CPU during the run: {ours['cpu_s']:.2f} s the run's process (its"
        f" threads), {ours['database_cpu_s']:.2f} s PostgreSQL (every postgres"
        f" process); {os.cpu_count()} cores"
    )
    print(
        f"peak memory of reconcile_day's process (ru_maxrss, the highest of the"
        f" runs): {peak:.0f} MiB (goal {MEMORY_GOAL_MIB} MiB;"
        f" {ours['baseline_kib'] / 1024:.0f} MiB before the run); read and split:"
        f" {limit['maxrss_kib'] / 1024:.0f} MiB"
    )
    print(
        json.dumps(
            {
                "metric": f"reconcile_wechat_{count // 1000}k_lines_seconds_postgresql",
                "value": round(ours["seconds"], 2),
                "unit": "s",
                "limit": "reading the same bill file and splitting it into fields",
                "limit_value": round(limit["seconds"], 2),
                "ratio": round(ours["seconds"] / limit["seconds"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
