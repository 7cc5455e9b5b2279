"""reconciliation: what each statement's payout moved (paid_fen)

Revision ID: 0204
Revises: 0203
Create Date: 2026-12-04 07:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0204"
down_revision = "0203"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("merchant_statements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("paid_fen", sa.BigInteger(), nullable=False, server_default="0")
        )
    # Until now a statement paid out its whole net when it had a payout entry.
    op.execute(
        "UPDATE merchant_statements SET paid_fen = net_fen WHERE entry_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("merchant_statements", schema=None) as batch_op:
        batch_op.drop_column("paid_fen")
