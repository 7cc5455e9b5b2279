"""Verified, decrypted and settled WeChat Pay notifications per second.

Our path: signed AEAD_AES_256_GCM notifications POSTed to ``/notify/wechat`` of
the app served by waitress in a process of its own, on PostgreSQL. The limit: the
same verification and decryption (the adapter over wechatpayv3), the same settle
and record SQL, called directly in a process of its own without the web stack.
Both at the same concurrency, in the same run, on databases prepared identically:
one paying top-up per notification, each on its own card.

    python bench/notifications.py [--quick] [--count 2000] [--workers 8]

Needs PostgreSQL: DATABASE_URL, or postgresql+psycopg://postgres@127.0.0.1:5432/postgres.
The last line printed is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import create_database, drop_database  # noqa: E402  (bench/ledger.py)


def make_app(url: str, instance: str, base_url: str = "http://127.0.0.1"):  # type: ignore[no-untyped-def]
    import logging

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


def prepare(url: str, instance: str, count: int, tag: str) -> list[str]:
    """``count`` cards, each with a top-up paying; returns the order numbers."""
    from zoneinfo import ZoneInfo

    from campus.database import db
    from campus.people import Person, PersonKind
    from payments.cards import open_card
    from payments.topups import TopUpLimits, open_top_up

    app = make_app(url, instance)
    numbers = []
    now = dt.datetime.now(dt.UTC)
    with app.app_context(), db.transaction() as session:
        for index in range(count):
            person = Person(
                number=f"N{tag}{index:06d}",
                kind=PersonKind.STUDENT,
                name_zh="压测",
                name_en="Bench",
            )
            session.add(person)
            card = open_card(
                session, person, actor="bench", number=f"77{ord(tag):02d}{index:08d}"
            )
            top_up = open_top_up(
                session,
                card.number,
                1000,
                channel="wechat",
                payer_kind="native",
                limits=TopUpLimits(daily_cap_fen=10**9),
                zone=ZoneInfo("Asia/Shanghai"),
                now=now,
            )
            numbers.append(top_up.out_trade_no)
    return numbers


def notifications(instance: str, numbers: list[str]) -> list[tuple[dict, bytes]]:
    """Signed, sealed notifications as WeChat Pay sends them, one per order."""
    from sandbox import create_sandbox
    from sandbox.wechat import protocol

    gateway = create_sandbox(instance).gateways["wechat"]
    key, serial = gateway._mode_signer()
    stamp = int(time.time())
    built = []
    for index, number in enumerate(numbers):
        resource = {
            "mchid": gateway.keys.mchid,
            "appid": gateway.keys.appid,
            "out_trade_no": number,
            "transaction_id": f"42{stamp}{index:08d}",
            "trade_type": "NATIVE",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": dt.datetime.now(dt.UTC).isoformat(),
            "payer": {"openid": "o-bench"},
            "amount": {
                "total": 1000,
                "payer_total": 1000,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }
        plaintext = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
        event = {
            "id": str(uuid.uuid4()),
            "create_time": resource["success_time"],
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": protocol.seal(gateway.keys.apiv3_key, plaintext, "transaction")
            | {"original_type": "transaction"},
        }
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            **protocol.signed_headers(key, serial, body.decode(), stamp),
        }
        built.append((headers, body))
    return built


def serve(url: str, instance: str, port: int) -> None:
    import waitress

    waitress.serve(
        make_app(url, instance, f"http://127.0.0.1:{port}"),
        host="127.0.0.1",
        port=port,
        threads=16,
        _quiet=True,
    )


def direct(url: str, instance: str, batch: list, workers: int, queue) -> None:  # type: ignore[no-untyped-def]
    from campus.database import db
    from payments.channel_log import record_notification
    from payments.notifications import handle_notification

    app = make_app(url, instance)

    def one(item: tuple[dict, bytes]) -> str:
        headers, body = item
        with app.app_context():
            handled = handle_notification("wechat", headers, body)
            record_notification(
                "wechat",
                headers,
                body,
                handled.outcome,
                notification_id=handled.notification_id,
                out_trade_no=handled.out_trade_no,
            )
            db.session.remove()
            return handled.outcome

    from payments.channels import channel_for

    with app.app_context():
        channel_for("wechat").client  # noqa: B018 - build the SDK client up front
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(one, batch))
    queue.put((time.perf_counter() - started, outcomes.count("accepted")))


def over_http(port: int, batch: list, workers: int) -> tuple[float, int]:
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=workers)
    session.mount("http://", adapter)
    address = f"http://127.0.0.1:{port}/notify/wechat"

    def one(item: tuple[dict, bytes]) -> int:
        headers, body = item
        return session.post(address, data=body, headers=headers, timeout=30).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        statuses = list(pool.map(one, batch))
    return time.perf_counter() - started, sum(1 for s in statuses if s == 204)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 per side")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    arguments = parser.parse_args()
    count = 400 if arguments.quick else arguments.count
    instance = tempfile.mkdtemp()
    url = create_database("notify")
    context = multiprocessing.get_context("spawn")
    server = None
    try:
        http_numbers = prepare(url, instance, count, "h")
        direct_numbers = prepare(url, instance, count, "d")
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = context.Process(target=serve, args=(url, instance, port), daemon=True)
        server.start()
        import requests

        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        # Warm the server's SDK client (platform key) before timing.
        warm = notifications(instance, prepare(url, instance, 1, "w"))
        over_http(port, warm, 1)

        ours_seconds, ours_ok = over_http(
            port, notifications(instance, http_numbers), arguments.workers
        )
        queue = context.Queue()
        worker = context.Process(
            target=direct,
            args=(
                url,
                instance,
                notifications(instance, direct_numbers),
                arguments.workers,
                queue,
            ),
        )
        worker.start()
        direct_seconds, direct_ok = queue.get()
        worker.join()
    finally:
        if server is not None:
            server.terminate()
            server.join()
        from campus.database import db

        if db.engine is not None:
            db.engine.dispose()
        drop_database(url)

    if ours_ok != count or direct_ok != count:
        raise SystemExit(f"not every notification settled: {ours_ok}, {direct_ok}")
    ours, limit = count / ours_seconds, count / direct_seconds
    print(f"HTTP endpoint (waitress): {ours:8.1f} notifications/s")
    print(f"direct, no web stack:     {limit:8.1f} notifications/s")
    print(
        json.dumps(
            {
                "metric": "wechat_notifications_settled_per_second_postgresql",
                "value": round(ours, 1),
                "unit": "notifications/s",
                "limit": "the same verification, decryption and SQL called directly",
                "limit_value": round(limit, 1),
                "ratio": round(ours / limit, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
