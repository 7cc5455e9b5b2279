"""reconciliation: channel fees and merchant statements

Revision ID: 0202
Revises: 0201
Create Date: 2026-12-03 19:56:31.672180
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campus.database

revision = "0202"
down_revision = "0201"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_fees",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("out_trade_no", sa.String(length=64), nullable=False),
        sa.Column("merchant", sa.String(length=32), nullable=False),
        sa.Column("fee_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_fees")),
        sa.UniqueConstraint(
            "channel", "out_trade_no", name=op.f("uq_channel_fees_channel_out_trade_no")
        ),
    )
    with op.batch_alter_table("channel_fees", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_channel_fees_day"), ["day"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_channel_fees_merchant"), ["merchant"], unique=False
        )

    op.create_table(
        "merchant_statements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("gross_by_channel", sa.Text(), nullable=False),
        sa.Column("gross_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunds_fen", sa.BigInteger(), nullable=False),
        sa.Column("fees_fen", sa.BigInteger(), nullable=False),
        sa.Column("net_fen", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_merchant_statements_entry_id_journal_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_statements")),
        sa.UniqueConstraint(
            "merchant", "day", name=op.f("uq_merchant_statements_merchant_day")
        ),
    )
    with op.batch_alter_table("merchant_statements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_merchant_statements_day"), ["day"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("merchant_statements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merchant_statements_day"))

    op.drop_table("merchant_statements")
    with op.batch_alter_table("channel_fees", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_fees_merchant"))
        batch_op.drop_index(batch_op.f("ix_channel_fees_day"))

    op.drop_table("channel_fees")
