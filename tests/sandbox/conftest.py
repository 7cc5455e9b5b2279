"""A sandbox served on a real loopback port, and a notification receiver.

Both are made once per test session; ``served_sandbox`` puts the sandbox back to
its defaults (clock, faults, gateway settings, outbox) before each test. The
sandbox is mounted at ``/sandbox`` as under the service, so a gateway lives at
``<url>/sandbox/<name>``. Other test packages import these fixtures by name::

    from tests.sandbox.conftest import (  # noqa: F401
        _receiver, _served, receiver, sandbox_instance, served_sandbox,
    )
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Request, Response

from sandbox import create_sandbox
from sandbox.core import Clock, LoopbackServer, Sandbox


@dataclasses.dataclass
class ServedSandbox:
    sandbox: Sandbox
    server: LoopbackServer

    @property
    def url(self) -> str:
        """Where the sandbox's control and payer pages are."""
        return self.server.url + "/sandbox"

    def gateway_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def pay(
        self, prepay_id: str, payer: str = "demo-1", **form: str
    ) -> requests.Response:
        """A demo payer confirms on the payer page, through HTTP."""
        return requests.post(
            f"{self.url}/pay/wechat/{prepay_id}",
            data={"payer": payer, "action": "confirm", **form},
            allow_redirects=False,
            timeout=10,
        )

    def deliver(self) -> int:
        return self.sandbox.outbox.deliver_due()

    @property
    def clock(self) -> Clock:
        return self.sandbox.clock


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str


class Receiver:
    """A merchant's notify_url on a loopback port: records every request and
    answers with the statuses queued in ``answers`` (then ``default``)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[tuple[int, bytes]] = []
        self.default: tuple[int, bytes] = (204, b"")
        self._lock = threading.Lock()
        self.server = LoopbackServer(self._app).start()

    def url(self, path: str = "/notify") -> str:
        return self.server.url + path

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.answers.clear()
            self.default = (204, b"")

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.received.append(
                Received(dict(request.headers), request.get_data(), request.path)
            )
            status, body = self.answers.pop(0) if self.answers else self.default
        return Response(body, status=status)(environ, start_response)


@pytest.fixture(scope="session")
def sandbox_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served sandbox's own instance folder, apart from the app's (whose
    sandbox other tests use): the demo payers' balances here are ours alone."""
    return tmp_path_factory.mktemp("sandbox-instance")


@pytest.fixture(scope="session")
def _served(sandbox_instance: Path) -> Iterator[ServedSandbox]:
    sandbox = create_sandbox(sandbox_instance)
    app = DispatcherMiddleware(NotFound(), {"/sandbox": sandbox.wsgi()})
    server = LoopbackServer(app).start()  # type: ignore[arg-type]
    yield ServedSandbox(sandbox, server)
    for gateway in sandbox.gateways.values():
        if hasattr(gateway, "close"):
            gateway.close()
    server.stop()


@pytest.fixture
def served_sandbox(_served: ServedSandbox) -> ServedSandbox:
    """The session's sandbox, back at its defaults."""
    sandbox = _served.sandbox
    sandbox.clock.reset()
    sandbox.faults.clear()
    for delivery in sandbox.outbox.pending():
        # A previous test's notifications are not this test's business.
        delivery.done = True
    wechat = sandbox.gateways["wechat"]
    wechat.configure(  # type: ignore[attr-defined]
        platform_mode="public_key",
        signing_serial=wechat.keys.platform_certificates[-1].serial,  # type: ignore[attr-defined]
        refund_seconds=5,
    )
    wechat.release_held()  # type: ignore[attr-defined]
    wechat.reset_payers()  # type: ignore[attr-defined]
    return _served


@pytest.fixture(scope="session")
def _receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.stop()


@pytest.fixture
def receiver(_receiver: Receiver) -> Receiver:
    _receiver.reset()
    return _receiver


@pytest.fixture
def make_wechat_channel(
    served_sandbox: ServedSandbox, sandbox_instance: Path, engine: Any
) -> Iterator[Any]:
    """``make(mode)``: our WeChat adapter as the embedded default configures it
    (the sandbox's keys from the instance folder, the gateway under
    ``<base_url>/sandbox``), aimed at the served sandbox, with the sandbox signing
    in the same platform mode and the adapter reading the sandbox clock.
    Keyword arguments replace config fields. Notification ids are checked
    against the test database, as in the service."""
    from campus.database import db
    from campus.settings import Settings
    from payments.channels.wechat import WechatChannel, WechatConfig

    settings = Settings(
        instance_path=sandbox_instance, base_url=served_sandbox.server.url
    )

    def make(mode: str = "public_key", **changes: Any) -> WechatChannel:
        served_sandbox.sandbox.gateways["wechat"].configure(  # type: ignore[attr-defined]
            platform_mode=mode
        )
        config = WechatConfig.from_settings(
            settings, {"CAMPUS_WECHAT_PLATFORM_MODE": mode}
        )
        return WechatChannel(
            dataclasses.replace(config, **changes), now=served_sandbox.clock.now
        )

    yield make
    # The duplicate check reads through the thread's scoped session.
    db.session.remove()
