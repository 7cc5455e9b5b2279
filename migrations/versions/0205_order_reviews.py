"""reconciliation: finance's reviews of orders payments flagged needs_review

Revision ID: 0205
Revises: 0204
Create Date: 2026-12-04 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from campus.database import UTCDateTime

revision = "0205"
down_revision = "0204"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("flag_reason", sa.String(255), nullable=False),
        sa.Column("note", sa.String(255), nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=False),
        sa.Column("reviewed_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "out_trade_no", "flag_reason"),
    )
    op.create_index("ix_order_reviews_out_trade_no", "order_reviews", ["out_trade_no"])


def downgrade() -> None:
    op.drop_index("ix_order_reviews_out_trade_no", table_name="order_reviews")
    op.drop_table("order_reviews")
