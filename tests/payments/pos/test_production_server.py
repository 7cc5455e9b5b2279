"""The app served as the README's production section serves it (granian, worker
processes of threads, settings from the environment) takes signed wallet payments
over HTTP, keeps a terminal's connection alive, and refuses a replay."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest

from payments.pos.terminal_auth import sign

ROOT = Path(__file__).resolve().parents[3]
PAY = "/api/terminal/payments"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(settings, tmp_path):  # type: ignore[no-untyped-def]
    port = _free_port()
    environment = dict(
        os.environ,
        CAMPUS_DATABASE_URL=settings.database_url,
        CAMPUS_INSTANCE_PATH=str(settings.instance_path),
        CAMPUS_SCHEDULER="off",
        CAMPUS_CHANNELS="live",
    )
    log = (tmp_path / "granian.log").open("wb")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            "2",
            "--blocking-threads",
            "4",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "wsgi:app",
        ],  # fmt: skip
        env=environment,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    output = (tmp_path / "granian.log").read_text(errors="replace")
                    raise AssertionError(f"granian did not start:\n{output}") from None
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_the_production_server_takes_signed_payments_on_one_connection(
    served, session, make_card, make_terminal
) -> None:
    card = make_card(balance_fen=1_000)
    terminal = make_terminal()
    http = HTTPConnection("127.0.0.1", served, timeout=30)

    def pay(order_no: str, headers: dict | None = None):  # type: ignore[no-untyped-def]
        body = json.dumps(
            {"order_no": order_no, "amount_fen": 300, "card_number": card.number}
        ).encode()
        headers = headers or sign(
            terminal.secret, "POST", PAY, body, key_id=terminal.key_id
        )
        http.request(
            "POST",
            PAY,
            body=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        answer = http.getresponse()
        return answer.status, json.loads(answer.read()), headers

    try:
        answers = [pay(f"served-{n}") for n in range(3)]
        replayed = pay("served-2", headers=answers[-1][2])
    finally:
        http.close()

    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert all(answer["state"] == "succeeded" for _, answer, _ in answers)
    assert replayed[0] == 401
    assert (replayed[1]["code"], replayed[1]["reason"]) == (
        "terminal_signature_refused",
        "nonce",
    )
    session.rollback()
    assert card.wallet.balance_fen == 1_000 - 3 * 300
