"""The POS settings, read from ``CAMPUS_POS_*`` environment variables.

They live here rather than in ``campus.settings`` because nothing outside the POS
reads them. ``now`` and ``sleep`` are what the poll loop uses to wait for a payer:
with the sandbox mounted ``now`` is the sandbox's clock, and tests replace ``sleep``
with one that moves that clock, so that a 45-second wait takes no time at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable, Mapping

from flask import Flask, current_app

from campus.database import utcnow

PREFIX = "CAMPUS_POS_"


@dataclasses.dataclass(frozen=True)
class PosConfig:
    poll_deadline_seconds: int = 45
    """How long a code payment may wait for the payer's password before it is
    reversed (WeChat) or cancelled (Alipay)."""

    poll_interval_seconds: int = 3
    """Pause between two queries while the payer enters the password."""

    reverse_attempts: int = 5
    """How often a reverse / cancel answered "try again" is repeated before the
    payment is left to the stale-payment job."""

    pin_above_fen: int = 5000
    """Campus-card payments above this amount need the card PIN (50 yuan)."""

    signature_window_seconds: int = 300
    """A signed request's timestamp may be this far from our clock; its nonce is
    remembered for twice as long."""

    campus_code_seconds: int = 60
    """A campus payment code is accepted this long after it was issued (the page
    shows a new one every 30 seconds; the margin covers a slow cashier)."""

    stale_after_seconds: int = 120
    """The stale-payment job looks at payments still paying this long after they
    were opened (a live request has given up well before)."""

    now: Callable[[], dt.datetime] = utcnow
    sleep: Callable[[float], object] = time.sleep

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> PosConfig:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(PREFIX + field.name.upper())
            if raw is not None and field.type in ("int", int):
                values[field.name] = int(raw)
        return cls(**values)  # type: ignore[arg-type]


def init_app(app: Flask) -> None:
    config = PosConfig.from_environ()
    sandbox = app.extensions.get("campus.sandbox")
    if sandbox is not None:
        config = dataclasses.replace(config, now=sandbox.clock.now)
    app.extensions["payments.pos"] = config


def pos_config() -> PosConfig:
    config: PosConfig = current_app.extensions["payments.pos"]
    return config
