"""Notifications accepted from the channels, remembered by their own id.

WeChat Pay repeats a notification until it gets a 2xx and Alipay until it reads
``success``, and neither SDK remembers what it has seen. An id goes in this table in
the same transaction that acts on the notification, so a notification whose handling
failed is not remembered and its retry is handled afresh; the unique constraint
settles two copies arriving at once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from campus.database import Base, utcnow


class ReceivedNotification(Base):
    __tablename__ = "received_notifications"
    __table_args__ = (UniqueConstraint("channel", "notification_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    notification_id: Mapped[str] = mapped_column(String(64))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)
    accepted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def already_accepted(session: Session, channel: str, notification_id: str) -> bool:
    return (
        session.scalar(
            select(ReceivedNotification.id).where(
                ReceivedNotification.channel == channel,
                ReceivedNotification.notification_id == notification_id,
            )
        )
        is not None
    )


def remember_accepted(
    session: Session, channel: str, notification_id: str, out_trade_no: str | None
) -> bool:
    """Record the id in the caller's transaction; False when another transaction
    recorded it first (the caller then treats its copy as a duplicate)."""
    try:
        with session.begin_nested():
            session.add(
                ReceivedNotification(
                    channel=channel,
                    notification_id=notification_id,
                    out_trade_no=out_trade_no,
                )
            )
            session.flush()
    except IntegrityError:
        return False
    return True
