"""payments: merchant payables may go negative (a refund after settlement)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 07:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE accounts SET allow_negative = true WHERE kind = 'merchant_payable'"
    )


def downgrade() -> None:
    # Refused while a payable is negative: the check constraint says which.
    op.execute(
        "UPDATE accounts SET allow_negative = false WHERE kind = 'merchant_payable'"
    )
