"""Every call to a channel and every notification received, kept raw with its time,
so that any balance can be explained line by line.

Records are written in a session of their own and committed at once: a call whose
business transaction rolls back (a crash, a refusal) is exactly the call we most
need to see afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from campus.database import Base, db, utcnow
from payments.channels.base import (
    ChannelError,
    ChannelRejected,
    ChannelUnavailable,
    ForgedResponse,
)

logger = logging.getLogger(__name__)

# Keys whose values never go into a record: a payer's payment code is a bearer token
# for a minute, and nobody needs it afterwards.
_SECRET_KEYS = {"auth_code", "bar_code", "payment_code"}


class ChannelCall(Base):
    __tablename__ = "channel_calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(32))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    """``ok``, ``unavailable`` (outcome unknown), ``rejected``, ``forged``,
    ``error``."""
    error_code: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    duration_ms: Mapped[int] = mapped_column(Integer)


class NotificationRecord(Base):
    __tablename__ = "notification_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    headers: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    """``accepted``, ``duplicate``, ``refused``, ``flagged``, ``error``."""
    reason: Mapped[str | None] = mapped_column(String(255))
    notification_id: Mapped[str | None] = mapped_column(String(64))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)


def scrub(value: Any) -> Any:
    """A copy of ``value`` with secret fields masked, for storage."""
    if isinstance(value, Mapping):
        return {
            key: ("***" if key in _SECRET_KEYS else scrub(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return scrub(dataclasses.asdict(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(scrub(value), ensure_ascii=False, default=str)[:20_000]


@dataclasses.dataclass
class CallRecord:
    response: Any = None


@contextlib.contextmanager
def recorded_call(
    channel: str, operation: str, out_trade_no: str | None, request: Any = None
) -> Iterator[CallRecord]:
    """Time the channel call made inside the block and record it, whatever its
    outcome; set ``record.response`` to what the call returned."""
    record = CallRecord()
    started = utcnow()
    clock = time.perf_counter()
    outcome, error_code = "ok", None
    try:
        yield record
    except ChannelError as error:
        outcome = "error"
        for kind, name in (
            (ChannelUnavailable, "unavailable"),
            (ChannelRejected, "rejected"),
            (ForgedResponse, "forged"),
        ):
            if isinstance(error, kind):
                outcome = name
        error_code = error.error_code
        record.response = {"error": str(error)}
        raise
    finally:
        session = db.new_session()
        try:
            session.add(
                ChannelCall(
                    channel=channel,
                    operation=operation,
                    out_trade_no=out_trade_no,
                    outcome=outcome,
                    error_code=error_code,
                    request=_dump(request),
                    response=_dump(record.response),
                    started_at=started,
                    duration_ms=int((time.perf_counter() - clock) * 1000),
                )
            )
            session.commit()
        finally:
            session.close()
        logger.info(
            "channel_call",
            extra={
                "channel": channel,
                "operation": operation,
                "out_trade_no": out_trade_no,
                "outcome": outcome,
            },
        )


def record_notification(
    channel: str,
    headers: Mapping[str, str],
    body: bytes,
    outcome: str,
    *,
    reason: str | None = None,
    notification_id: str | None = None,
    out_trade_no: str | None = None,
) -> None:
    session = db.new_session()
    try:
        session.add(
            NotificationRecord(
                channel=channel,
                headers=json.dumps(dict(headers), ensure_ascii=False),
                body=body.decode("utf-8", errors="replace")[:20_000],
                outcome=outcome,
                reason=(reason or "")[:255] or None,
                notification_id=notification_id,
                out_trade_no=out_trade_no,
            )
        )
        session.commit()
    finally:
        session.close()
