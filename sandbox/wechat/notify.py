"""WeChat Pay's notifications as the sandbox sends them, faults included.

The resource is sealed with AEAD_AES_256_GCM under the APIv3 key and the whole body
signed with the platform key of the merchant's mode; delivery goes through the
sandbox outbox on WeChat Pay's retry schedule and counts any 2xx as accepted. The
``notification`` fault drops, duplicates, delays, reorders, mis-signs or changes
the amount of a notification.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable, ItemsView
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.core import WECHAT_RETRY_SCHEDULE, Clock, Faults, Outbox
from sandbox.wechat import protocol

logger = logging.getLogger(__name__)

CHANNEL = "wechat"
ZONE = ZoneInfo("Asia/Shanghai")


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(ZONE).isoformat(timespec="seconds")


class _SignedOnSend(dict[str, str]):
    """Notification headers that sign themselves each time they are read.

    The outbox sends the headers it was given on every attempt, but WeChat Pay
    signs each attempt afresh, so a retry a day later still carries a current
    ``Wechatpay-Timestamp``. ``requests`` reads headers through ``items()``, so
    re-signing there gives each attempt its own signature. A per-attempt hook in
    ``Outbox`` would make this plain; until then this is where it happens.
    """

    def __init__(self, sign: Callable[[], dict[str, str]]) -> None:
        super().__init__(sign())
        self._sign = sign

    def items(self) -> ItemsView[str, str]:  # type: ignore[override]
        self.clear()
        self.update(self._sign())
        return super().items()


class Notifier:
    def __init__(
        self,
        *,
        apiv3_key: str,
        clock: Clock,
        faults: Faults,
        outbox: Outbox,
        signer: Callable[[], tuple[rsa.RSAPrivateKey, str]],
        lock: threading.RLock,
    ) -> None:
        """``signer`` names the key and serial of the merchant's mode at the moment
        of sending; ``lock`` is the gateway's, held while orders change."""
        self.apiv3_key = apiv3_key
        self.clock = clock
        self.faults = faults
        self.outbox = outbox
        self._signer = signer
        self._lock = lock
        self._held: list[dict[str, Any]] = []
        self._forger: rsa.RSAPrivateKey | None = None

    def send(
        self,
        *,
        out_trade_no: str,
        url: str,
        event_type: str,
        summary: str,
        original_type: str,
        resource: dict[str, Any],
        delay_seconds: float = 0,
    ) -> None:
        mode = self.faults.get(CHANNEL, "notification", out_trade_no)
        if mode == "drop":
            logger.info(
                "sandbox_wechat_notification_dropped",
                extra={"out_trade_no": out_trade_no},
            )
            return
        resource = json.loads(json.dumps(resource))
        if mode == "amount":
            delta = int(
                self.faults.get(CHANNEL, "notification_amount_delta_fen", out_trade_no)
                or 1
            )
            field = "refund" if original_type == "refund" else "total"
            resource["amount"][field] += delta
            if original_type != "refund":
                resource["amount"]["payer_total"] += delta
        if mode == "delay":
            delay_seconds += float(
                self.faults.get(CHANNEL, "notification_delay_seconds", out_trade_no)
                or 60
            )
        plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
        event = {
            "id": str(uuid.uuid4()),
            "create_time": rfc3339(self.clock.now()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": protocol.seal(self.apiv3_key, plaintext, original_type)
            | {"original_type": original_type},
        }
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        delivery = {
            "out_trade_no": out_trade_no,
            "url": url,
            "body": body,
            "forged": mode == "bad_signature",
            "delay_seconds": delay_seconds,
        }
        if mode == "reorder":
            # Held back until the next notification has gone out before it.
            self._held.append(delivery)
            return
        self._enqueue(**delivery)
        if mode == "duplicate":
            self._enqueue(**delivery)
        held, self._held = self._held, []
        for late in held:
            late["delay_seconds"] = max(late["delay_seconds"], delay_seconds) + 1
            self._enqueue(**late)

    def release_held(self) -> int:
        """Send notifications held by ``reorder`` now (nothing came after them)."""
        with self._lock:
            held, self._held = self._held, []
            for late in held:
                self._enqueue(**late)
            return len(held)

    def _enqueue(
        self,
        *,
        out_trade_no: str,
        url: str,
        body: str,
        forged: bool,
        delay_seconds: float,
    ) -> None:
        def sign() -> dict[str, str]:
            key, serial = self._signer()
            if forged:
                key = self._forging_key()
            stamp = int(self.clock.now().timestamp())
            return {
                "Content-Type": "application/json",
                **protocol.signed_headers(key, serial, body, stamp),
            }

        delivery = self.outbox.enqueue(
            channel=CHANNEL,
            out_trade_no=out_trade_no,
            url=url,
            body=body.encode(),
            headers={},
            accepted=lambda response: 200 <= response.status_code < 300,
            schedule=WECHAT_RETRY_SCHEDULE,
            delay_seconds=delay_seconds,
        )
        delivery.headers = _SignedOnSend(sign)

    def _forging_key(self) -> rsa.RSAPrivateKey:
        if self._forger is None:
            self._forger = rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            )
        return self._forger
