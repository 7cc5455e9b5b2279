"""Terminals that sign their requests, over the test client or real HTTP, and a
poll loop that moves the sandbox's clock instead of sleeping."""

from __future__ import annotations

import dataclasses
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from payments.merchants import add_terminal
from payments.pos.terminal_auth import sign

_orders = itertools.count(1)


def new_order_no() -> str:
    return f"O{next(_orders):08d}"


@dataclasses.dataclass
class SignedTerminal:
    """A terminal: signs like the device and sends through the test client or,
    given ``url``, over HTTP."""

    key_id: str
    secret: str
    app: Any
    url: str | None = None

    def stamp(self) -> int:
        return int(self.app.extensions["payments.pos"].now().timestamp())

    def headers(self, method: str, path: str, raw: bytes, **options: Any) -> dict:
        options.setdefault("timestamp", self.stamp())
        return sign(self.secret, method, path, raw, key_id=self.key_id, **options)

    def send(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        extra: dict[str, str] | None = None,
        signed: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict]:
        """``body`` as JSON, or ``raw`` (JSON as written by hand) as it is."""
        if raw is None:
            raw = json.dumps(body).encode() if body is not None else b""
        headers = dict(signed or self.headers(method, path, raw))
        headers.update(extra or {})
        if body is not None or raw:
            headers["Content-Type"] = "application/json"
        if self.url:
            answer = requests.request(
                method, self.url + path, data=raw, headers=headers, timeout=60
            )
            return answer.status_code, answer.json()
        response = self.app.test_client().open(
            path, method=method, data=raw, headers=headers
        )
        return response.status_code, response.get_json()

    def pay(self, amount_fen: int, order_no: str | None = None, **fields: Any):
        body = {"order_no": order_no or new_order_no(), "amount_fen": amount_fen}
        extra = fields.pop("headers", None)
        body.update(fields)
        return self.send("POST", "/api/terminal/payments", body, extra=extra)

    def query(self, order_no: str):
        return self.send("GET", f"/api/terminal/payments/{order_no}")


@pytest.fixture
def make_terminal(app, session, merchant):
    def make(target_merchant=None, url: str | None = None, served=None):
        terminal = add_terminal(session, target_merchant or merchant, "till")
        session.commit()
        return SignedTerminal(terminal.key_id, terminal.secret, served or app, url)

    return make


@pytest.fixture
def terminal(make_terminal) -> SignedTerminal:
    return make_terminal()


@pytest.fixture
def live_terminal(make_terminal, live_app) -> SignedTerminal:
    return make_terminal(url=live_app.url, served=live_app.app)


@pytest.fixture
def fast_poll(live_app):
    """The served app's poll loop moves the sandbox clock by each pause, so that
    the 45-second deadline passes in no time; ``hooks`` run at each pause."""
    hooks: list = []

    def sleep(seconds: float) -> None:
        live_app.sandbox.clock.advance(seconds)
        for hook in hooks:
            hook(live_app.sandbox.clock.now())

    config = live_app.app.extensions["payments.pos"]
    live_app.app.extensions["payments.pos"] = dataclasses.replace(config, sleep=sleep)
    return hooks


def in_app(live_app, job):
    """Run ``job`` in a thread inside the served app's context, as the scheduler."""

    def run():
        with live_app.app.app_context():
            return job()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()
