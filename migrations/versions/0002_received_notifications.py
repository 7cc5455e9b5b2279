"""payments: received channel notifications

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 18:56:10.217862
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campus.database

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "received_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("out_trade_no", sa.String(length=64), nullable=True),
        sa.Column(
            "accepted_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_received_notifications")),
        sa.UniqueConstraint(
            "channel",
            "notification_id",
            name=op.f("uq_received_notifications_channel_notification_id"),
        ),
    )
    with op.batch_alter_table("received_notifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_received_notifications_out_trade_no"),
            ["out_trade_no"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("received_notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_received_notifications_out_trade_no"))

    op.drop_table("received_notifications")
