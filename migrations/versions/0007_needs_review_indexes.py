"""payments: index the needs_review flag that finance's page reads

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 07:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_top_ups_needs_review", "top_ups", ["needs_review"])
    op.create_index("ix_pos_payments_needs_review", "pos_payments", ["needs_review"])


def downgrade() -> None:
    op.drop_index("ix_pos_payments_needs_review", table_name="pos_payments")
    op.drop_index("ix_top_ups_needs_review", table_name="top_ups")
