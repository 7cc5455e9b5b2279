"""reconciliation: the day whose bill matched a held discrepancy

Revision ID: 0203
Revises: 0202
Create Date: 2026-12-10 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0203"
down_revision = "0202"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("discrepancies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("matched_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("discrepancies", schema=None) as batch_op:
        batch_op.drop_column("matched_on")
