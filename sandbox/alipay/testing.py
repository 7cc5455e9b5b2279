"""Pytest fixtures that run the sandbox Alipay on a real loopback server.

Name the fixtures in a test module (``alipay_sandbox = testing.alipay_sandbox``,
and the same for ``alipay_keys`` and ``_alipay_servers``). Keys are generated
once per test session and copied into each test's own instance folder, so every
test starts with a fresh gateway database and its own clock, faults and outbox,
without paying for RSA key generation each time.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Request, Response

from sandbox.alipay.gateway import AlipayGateway
from sandbox.alipay.keys import ensure_keys
from sandbox.core import LoopbackServer, Sandbox


class NotifyReceiver:
    """A merchant's ``notify_url`` that records what arrives and answers with
    the next of ``answers`` (``success`` once they run out)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.answers: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.received.append(request.get_data())
            status, text = self.answers.pop(0) if self.answers else (200, "success")
        return Response(text, status=status)(environ, start_response)


@dataclasses.dataclass
class RunningAlipay:
    sandbox: Sandbox
    gateway: AlipayGateway
    base_url: str
    """What the service's ``base_url`` would be: the gateway answers at
    ``<base_url>/sandbox/alipay/gateway.do``."""
    receiver: NotifyReceiver
    notify_url: str

    @property
    def gateway_url(self) -> str:
        return f"{self.base_url}/sandbox/alipay/gateway.do"

    def payer_code(self, payer_index: int = 0) -> str:
        payer = self.gateway.payers()[payer_index]
        return self.gateway.current_code(payer["id"])


@pytest.fixture(scope="session")
def alipay_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("alipay-keys")
    ensure_keys(folder)
    return folder


class _Current:
    """The WSGI app a long-lived server passes each request to: stopping a
    server costs half a second, so the servers outlive the tests and each test
    plugs in its own sandbox."""

    def __init__(self) -> None:
        self.app: Any = NotFound()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def _alipay_servers() -> Iterator[
    tuple[_Current, LoopbackServer, _Current, LoopbackServer]
]:
    gateway_app, hook_app = _Current(), _Current()
    with LoopbackServer(gateway_app) as server, LoopbackServer(hook_app) as hook:
        yield gateway_app, server, hook_app, hook


@pytest.fixture
def alipay_sandbox(
    alipay_keys: Path,
    tmp_path: Path,
    _alipay_servers: tuple[_Current, LoopbackServer, _Current, LoopbackServer],
) -> Iterator[RunningAlipay]:
    gateway_app, server, hook_app, hook = _alipay_servers
    instance = tmp_path / "instance"
    shutil.copytree(alipay_keys / "sandbox", instance / "sandbox")
    sandbox = Sandbox(instance)
    gateway = AlipayGateway(sandbox)
    sandbox.register(gateway)
    # Served under /sandbox as the service serves it, so the default gateway
    # address of the sandbox configuration is the one the tests use.
    gateway_app.app = DispatcherMiddleware(NotFound(), {"/sandbox": sandbox.wsgi()})
    receiver = NotifyReceiver()
    hook_app.app = receiver
    yield RunningAlipay(
        sandbox=sandbox,
        gateway=gateway,
        base_url=server.url,
        receiver=receiver,
        notify_url=f"{hook.url}/notify/alipay",
    )
    gateway_app.app = hook_app.app = NotFound()
    gateway.engine.dispose()
