"""What both sandbox gateways share: a movable clock, fault switches, an outbox of
notifications retried on the channel's schedule, and a loopback server.

The gateways imitate WeChat Pay v3 and Alipay closely enough that our adapters reach
them through the real SDKs by configuration alone. They keep their own state (their
own SQLite file in the instance folder), never ours: to the service they are a
foreign system on the other end of HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from wsgiref.types import WSGIApplication

import requests
from werkzeug.serving import BaseWSGIServer, make_server

logger = logging.getLogger(__name__)


class Clock:
    """Real time plus an offset that tests and the control page can move, so that
    retry schedules, expiry and bill days pass without sleeping."""

    def __init__(self) -> None:
        self._offset = dt.timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return dt.datetime.now(dt.UTC) + self._offset

    def advance(self, seconds: float) -> dt.datetime:
        with self._lock:
            self._offset += dt.timedelta(seconds=seconds)
        return self.now()

    def set(self, moment: dt.datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the sandbox clock needs an aware datetime")
        with self._lock:
            self._offset = moment - dt.datetime.now(dt.UTC)

    def reset(self) -> None:
        with self._lock:
            self._offset = dt.timedelta(0)


ANY_ORDER = "*"


class Faults:
    """Fault switches, for every order of a channel or for one ``out_trade_no``.

    A switch is a name and a value, e.g. ``("latency_ms", 800)``,
    ``("user_paying_seconds", 30)``, ``("notification", "drop")``. What each name
    means is decided by the gateway that reads it; ``FAULT_NAMES`` lists them.
    A switch for one order wins over the switch for every order.

    With a ``path`` the switches are kept in that JSON file and re-read when it
    changes, so a switch set on the control page of a running server, or by
    ``flask demo traffic``, still holds when another process (``flask reconcile
    nightly``) asks the gateway for a bill. Values must be JSON values.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._switches: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def set(
        self, channel: str, name: str, value: Any, out_trade_no: str = ANY_ORDER
    ) -> None:
        with self._lock:
            self._reload()
            self._switches.setdefault((channel, out_trade_no), {})[name] = value
            self._save()
        logger.info(
            "sandbox_fault_set",
            extra={"channel": channel, "fault": name, "order": out_trade_no},
        )

    def get(self, channel: str, name: str, out_trade_no: str | None = None) -> Any:
        with self._lock:
            self._reload()
            if out_trade_no is not None:
                own = self._switches.get((channel, out_trade_no), {})
                if name in own:
                    return own[name]
            return self._switches.get((channel, ANY_ORDER), {}).get(name)

    def clear(self, channel: str | None = None) -> None:
        with self._lock:
            self._reload()
            for key in list(self._switches):
                if channel is None or key[0] == channel:
                    del self._switches[key]
            self._save()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            self._reload()
            return [
                {"channel": channel, "order": order, "name": name, "value": value}
                for (channel, order), switches in self._switches.items()
                for name, value in switches.items()
            ]

    def apply(self, spec: str, known: Mapping[str, Mapping[str, str]]) -> None:
        """Switch on the faults a setting lists, for every order:
        ``wechat.notification=drop; alipay.latency_ms=800`` (values are read as
        JSON where they parse, as text otherwise). ``known`` maps each gateway to
        its fault names; an unknown one raises ``ValueError`` naming it."""
        for item in filter(None, (part.strip() for part in spec.split(";"))):
            switch, _, raw = item.partition("=")
            channel, _, name = switch.strip().partition(".")
            if name not in known.get(channel, {}) or not raw.strip():
                raise ValueError(f"unknown sandbox fault {item!r}")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw.strip()
            self.set(channel, name, value)

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._switches, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            kept = json.loads(self._path.read_text(encoding="utf-8"))
            self._switches = {
                (entry["channel"], entry["order"]): dict(entry["switches"])
                for entry in kept
            }
        except (ValueError, KeyError, TypeError):
            # A file edited by hand into nonsense switches every fault off rather
            # than stopping the gateways.
            logger.warning("sandbox_faults_unreadable", extra={"path": str(self._path)})
            self._switches = {}
        self._stamp = stamp

    def _save(self) -> None:
        if self._path is None:
            return
        kept = [
            {"channel": channel, "order": order, "switches": switches}
            for (channel, order), switches in self._switches.items()
            if switches
        ]
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_suffix(".partial")
        partial.write_text(json.dumps(kept, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, self._path)
        stat = self._path.stat()
        self._stamp = (stat.st_mtime_ns, stat.st_size)


# The channels' published retry schedules, in seconds after the previous attempt.
# WeChat Pay v3: 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h (24h4m).
WECHAT_RETRY_SCHEDULE = (
    15,
    15,
    30,
    180,
    600,
    1200,
    1800,
    1800,
    1800,
    3600,
    10800,
    10800,
    10800,
    21600,
    21600,
)
# Alipay: 4m/10m/10m/1h/2h/6h/15h.
ALIPAY_RETRY_SCHEDULE = (240, 600, 600, 3600, 7200, 21600, 54000)


@dataclasses.dataclass
class Delivery:
    """One notification on its way to a merchant's ``notify_url``."""

    id: int
    channel: str
    out_trade_no: str
    url: str
    body: bytes
    headers: dict[str, str]
    accepted: Callable[[requests.Response], bool]
    schedule: Sequence[int]
    due_at: dt.datetime
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    done: bool = False
    gave_up: bool = False
    before_attempt: Callable[[Delivery], None] | None = None
    """Called before each attempt: the channels sign each attempt afresh (a retry
    a day later carries that day's timestamp), so a gateway re-signs here."""


class Outbox:
    """Notifications waiting to be sent, each retried on its channel's schedule
    until the receiver answers as the channel expects.

    ``deliver_due`` sends whatever is due by the sandbox clock; a background
    thread calls it every second when the sandbox is served, and tests call it
    directly after moving the clock.
    """

    def __init__(self, clock: Clock, timeout: float = 5.0) -> None:
        self.clock = clock
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._http = requests.Session()

    def enqueue(
        self,
        *,
        channel: str,
        out_trade_no: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        accepted: Callable[[requests.Response], bool],
        schedule: Sequence[int],
        delay_seconds: float = 0,
        before_attempt: Callable[[Delivery], None] | None = None,
    ) -> Delivery:
        delivery = Delivery(
            id=next(self._ids),
            channel=channel,
            out_trade_no=out_trade_no,
            url=url,
            body=body,
            headers=dict(headers),
            accepted=accepted,
            schedule=schedule,
            due_at=self.clock.now() + dt.timedelta(seconds=delay_seconds),
            before_attempt=before_attempt,
        )
        with self._lock:
            self._deliveries.append(delivery)
        return delivery

    def due(self) -> list[Delivery]:
        now = self.clock.now()
        with self._lock:
            return [d for d in self._deliveries if not d.done and d.due_at <= now]

    def pending(self, channel: str | None = None) -> list[Delivery]:
        with self._lock:
            return [
                d
                for d in self._deliveries
                if not d.done and (channel is None or d.channel == channel)
            ]

    def all(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def deliver_due(self) -> int:
        """Send every due notification once; return how many were accepted."""
        accepted = 0
        for delivery in self.due():
            if self._attempt(delivery):
                accepted += 1
        return accepted

    def _attempt(self, delivery: Delivery) -> bool:
        record: dict[str, Any] = {"at": self.clock.now().isoformat()}
        if delivery.before_attempt is not None:
            delivery.before_attempt(delivery)
        try:
            response = self._http.post(
                delivery.url,
                data=delivery.body,
                headers=delivery.headers,
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            record["error"] = type(error).__name__
            ok = False
        else:
            record["status"] = response.status_code
            record["body"] = response.text[:200]
            ok = delivery.accepted(response)
        delivery.attempts.append(record)
        if ok:
            delivery.done = True
        else:
            retry = len(delivery.attempts) - 1
            if retry < len(delivery.schedule):
                delivery.due_at = self.clock.now() + dt.timedelta(
                    seconds=delivery.schedule[retry]
                )
            else:
                delivery.done = delivery.gave_up = True
        logger.info(
            "sandbox_notification_attempt",
            extra={
                "channel": delivery.channel,
                "order": delivery.out_trade_no,
                "attempt": len(delivery.attempts),
                "accepted": ok,
            },
        )
        return ok


class LoopbackServer:
    """A WSGI app served on 127.0.0.1 in a background thread, on a free port unless
    one is given: real HTTP, so the SDKs' own HTTP code runs."""

    def __init__(self, app: WSGIApplication, port: int = 0) -> None:
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", port, app, threaded=True
        )
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"loopback-{self.port}", daemon=True
        )

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Gateway:
    """What each simulated channel offers the sandbox: its own WSGI app, mounted at
    ``/<name>``, and the demo payers' side for the shared payer pages."""

    name: str
    app: WSGIApplication

    def payers(self) -> list[dict[str, Any]]:
        """Demo payers: ``{"id", "name", "balance_fen", ...}``."""
        raise NotImplementedError

    def current_code(self, payer_id: str) -> str:
        """The payer's current one-use payment code, refreshed as the app does."""
        raise NotImplementedError

    def reset_payers(self) -> None:
        """Every demo payer back to their starting balance, no password switch."""
        raise NotImplementedError


class Sandbox:
    """The shared state of one sandbox: clock, faults, outbox, and its gateways.

    ``wsgi`` is what gets served: each gateway at ``/<name>`` (so that a gateway
    sees request paths exactly as the real API's, e.g. ``/v3/pay/transactions/
    native``), and the control and payer pages at ``/``.
    """

    def __init__(self, instance_path: Any, clock: Clock | None = None) -> None:
        self.instance_path = instance_path
        self.clock = clock or Clock()
        self.faults = Faults(Path(instance_path) / "sandbox" / "faults.json")
        self.outbox = Outbox(self.clock)
        self.gateways: dict[str, Gateway] = {}
        self.control_app: WSGIApplication | None = None

    def register(self, gateway: Gateway) -> None:
        self.gateways[gateway.name] = gateway

    def wsgi(self) -> WSGIApplication:
        from werkzeug.exceptions import NotFound
        from werkzeug.middleware.dispatcher import DispatcherMiddleware

        root = self.control_app or NotFound()
        return DispatcherMiddleware(
            root,  # type: ignore[arg-type]
            {f"/{name}": gateway.app for name, gateway in self.gateways.items()},
        )


@contextlib.contextmanager
def served_if_absent(app: WSGIApplication, base_url: str) -> Iterator[bool]:
    """Serve ``app`` at ``base_url`` for the length of a command, unless something
    already answers there; yield whether this process serves it.

    With the embedded default the channels' gateways are part of the service
    (``/sandbox/…``), so a command that talks to a channel, ``flask reconcile
    nightly`` say, needs the service to be listening. When ``flask serve`` runs,
    it is; when it does not, the command serves the app itself on the same
    address, and the channels, their bills and their notifications work the same.
    Only a loopback ``base_url`` is ever served this way.
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or "", parts.port or 80
    if host not in {"127.0.0.1", "localhost"}:
        yield False
        return
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        pass
    else:
        yield False
        return
    server = LoopbackServer(app, port=port).start()
    logger.info("sandbox_served_by_command", extra={"url": base_url})
    try:
        yield True
    finally:
        server.stop()
