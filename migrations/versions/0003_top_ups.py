"""payments: top-ups, channel calls, notification records

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 19:14:20.138074
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campus.database

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("out_trade_no", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("request", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column(
            "started_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_calls")),
    )
    with op.batch_alter_table("channel_calls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_channel_calls_out_trade_no"), ["out_trade_no"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_channel_calls_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "notification_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column(
            "received_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("notification_id", sa.String(length=64), nullable=True),
        sa.Column("out_trade_no", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_records")),
    )
    with op.batch_alter_table("notification_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_records_out_trade_no"),
            ["out_trade_no"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_notification_records_received_at"),
            ["received_at"],
            unique=False,
        )

    op.create_table(
        "top_ups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("out_trade_no", sa.String(length=32), nullable=False),
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("payer_kind", sa.String(length=16), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "created",
                "paying",
                "succeeded",
                "closed",
                "failed",
                name="topupstate",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("paid_at", campus.database.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "finished_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("checkout", sa.Text(), nullable=True),
        sa.Column("failure", sa.String(length=255), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("review_reason", sa.String(length=255), nullable=True),
        sa.Column(
            "claimed_until", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_top_ups_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_top_ups_entry_id_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_top_ups")),
        sa.UniqueConstraint(
            "channel", "transaction_id", name=op.f("uq_top_ups_channel_transaction_id")
        ),
        sa.UniqueConstraint("out_trade_no", name=op.f("uq_top_ups_out_trade_no")),
    )
    with op.batch_alter_table("top_ups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_top_ups_card_id"), ["card_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_top_ups_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_top_ups_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("top_ups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_top_ups_state"))
        batch_op.drop_index(batch_op.f("ix_top_ups_created_at"))
        batch_op.drop_index(batch_op.f("ix_top_ups_card_id"))

    op.drop_table("top_ups")
    with op.batch_alter_table("notification_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_records_received_at"))
        batch_op.drop_index(batch_op.f("ix_notification_records_out_trade_no"))

    op.drop_table("notification_records")
    with op.batch_alter_table("channel_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_calls_started_at"))
        batch_op.drop_index(batch_op.f("ix_channel_calls_out_trade_no"))

    op.drop_table("channel_calls")
