"""reconciliation: runs and discrepancies

Revision ID: 0201
Revises: 0001
Create Date: 2026-12-03 19:48:14.987389
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campus.database

revision = "0201"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "discrepancies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "held",
                "matched_late",
                "repaired",
                "resolved",
                name="discrepancystatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("repairable", sa.Boolean(), nullable=False),
        sa.Column("order_kind", sa.String(length=24), nullable=True),
        sa.Column("merchant", sa.String(length=32), nullable=True),
        sa.Column("out_trade_no", sa.String(length=64), nullable=True),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("out_refund_no", sa.String(length=64), nullable=True),
        sa.Column("our_state", sa.String(length=24), nullable=True),
        sa.Column("channel_state", sa.String(length=24), nullable=True),
        sa.Column("our_amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("channel_amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("bill_line", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=255), nullable=False),
        sa.Column("hold_until", sa.Date(), nullable=True),
        sa.Column(
            "found_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "closed_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("resolution", sa.String(length=24), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discrepancies")),
        sa.UniqueConstraint(
            "channel",
            "day",
            "kind",
            "key",
            name=op.f("uq_discrepancies_channel_day_kind_key"),
        ),
    )
    with op.batch_alter_table("discrepancies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_discrepancies_day"), ["day"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_discrepancies_out_trade_no"), ["out_trade_no"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_discrepancies_status"), ["status"], unique=False
        )

    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "running",
                "failed",
                "finished",
                name="runstate",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "started_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "finished_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "locked_until", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("bill_sha256", sa.String(length=64), nullable=True),
        sa.Column("bill_path", sa.String(length=255), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
        sa.UniqueConstraint(
            "channel", "day", name=op.f("uq_reconciliation_runs_channel_day")
        ),
    )


def downgrade() -> None:
    op.drop_table("reconciliation_runs")
    with op.batch_alter_table("discrepancies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_discrepancies_status"))
        batch_op.drop_index(batch_op.f("ix_discrepancies_out_trade_no"))
        batch_op.drop_index(batch_op.f("ix_discrepancies_day"))

    op.drop_table("discrepancies")
