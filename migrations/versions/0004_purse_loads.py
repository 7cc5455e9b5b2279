"""payments: offline purse loads

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 19:36:31.500853
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campus.database

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


OLD_KINDS = (
    "wallet",
    "merchant_payable",
    "merchant_settled",
    "channel_clearing",
    "fees",
    "suspense",
)
NEW_KINDS = OLD_KINDS + ("card_purse",)


def _account_kinds(kinds: tuple[str, ...]) -> None:
    # The kind column's CHECK lists the enum's values; a new kind means a new
    # constraint. SQLite cannot alter a constraint, so batch mode copies the table.
    allowed = ", ".join(f"'{kind}'" for kind in kinds)
    with op.batch_alter_table("accounts", recreate="auto") as batch_op:
        batch_op.drop_constraint(op.f("ck_accounts_accountkind"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_accounts_accountkind"), sa.text(f"kind IN ({allowed})")
        )


def upgrade() -> None:
    _account_kinds(NEW_KINDS)
    op.create_table(
        "purse_loads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column("top_up_id", sa.Integer(), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("loaded_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "partly_loaded",
                "loaded",
                name="loadstate",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_purse_loads_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["top_up_id"], ["top_ups.id"], name=op.f("fk_purse_loads_top_up_id_top_ups")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purse_loads")),
        sa.UniqueConstraint("top_up_id", name=op.f("uq_purse_loads_top_up_id")),
    )
    with op.batch_alter_table("purse_loads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_purse_loads_card_id"), ["card_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("purse_loads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_purse_loads_card_id"))

    op.drop_table("purse_loads")
    _account_kinds(OLD_KINDS)
