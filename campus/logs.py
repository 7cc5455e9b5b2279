"""Logging setup: events with ids as fields, JSON lines in production.

Modules log a constant event name and pass ids through ``extra=``::

    logger.info("top_up_settled", extra={"out_trade_no": order.out_trade_no})

so that a reader can grep one order's history and nothing secret is formatted into
a sentence by accident. Payment codes are masked with ``mask_code`` before logging.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class FieldsFormatter(logging.Formatter):
    """``time level logger event key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        }
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


def mask_code(code: str) -> str:
    """Keep the first 4 and last 2 characters of a payment code: enough to tell
    the channel and to match a cashier's screen, useless to a thief."""
    if len(code) <= 6:
        return "*" * len(code)
    return code[:4] + "*" * (len(code) - 6) + code[-2:]


def configure(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter: Any
    if json_lines:
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"message": "event", "levelname": "level"},
        )
    else:
        formatter = FieldsFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_campus", False):
            root.removeHandler(existing)
    handler._campus = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler says at INFO every time any job runs; our jobs log what they did.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
