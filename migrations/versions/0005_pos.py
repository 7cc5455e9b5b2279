"""pos: payments, refunds, nonces, campus codes, PINs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:45:44.334145
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campus.database

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pos_campus_codes",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column(
            "issued_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("used_at", campus.database.UTCDateTime(timezone=True), nullable=True),
        sa.Column("out_trade_no", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_pos_campus_codes_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_pos_campus_codes")),
    )
    with op.batch_alter_table("pos_campus_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pos_campus_codes_card_id"), ["card_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pos_campus_codes_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "pos_card_pins",
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column("pin_hash", sa.String(length=256), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column(
            "locked_until", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "changed_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_pos_card_pins_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("card_id", name=op.f("pk_pos_card_pins")),
    )
    op.create_table(
        "pos_cashier_merchants",
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_pos_cashier_merchants_merchant_id_merchants"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_pos_cashier_merchants_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "operator_id", "merchant_id", name=op.f("pk_pos_cashier_merchants")
        ),
    )
    op.create_table(
        "pos_payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("out_trade_no", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.Integer(), nullable=True),
        sa.Column("terminal_order_no", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "source",
            sa.Enum(
                "code",
                "tap",
                "qr",
                name="paymentsource",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("code_masked", sa.String(length=32), nullable=True),
        sa.Column("card_id", sa.Integer(), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "awaiting",
                "paying",
                "succeeded",
                "failed",
                "reversed",
                name="paymentstate",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=255), nullable=True),
        sa.Column("qr_token", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "deadline_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("paid_at", campus.database.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "finished_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column(
            "claimed_until", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("review_reason", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_pos_payments_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_pos_payments_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_pos_payments_merchant_id_merchants"),
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_pos_payments_terminal_id_terminals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pos_payments")),
        sa.UniqueConstraint(
            "channel",
            "transaction_id",
            name=op.f("uq_pos_payments_channel_transaction_id"),
        ),
        sa.UniqueConstraint("out_trade_no", name=op.f("uq_pos_payments_out_trade_no")),
        sa.UniqueConstraint("qr_token", name=op.f("uq_pos_payments_qr_token")),
        sa.UniqueConstraint(
            "terminal_id",
            "idempotency_key",
            name=op.f("uq_pos_payments_terminal_id_idempotency_key"),
        ),
        sa.UniqueConstraint(
            "terminal_id",
            "terminal_order_no",
            name=op.f("uq_pos_payments_terminal_id_terminal_order_no"),
        ),
    )
    with op.batch_alter_table("pos_payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pos_payments_card_id"), ["card_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pos_payments_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pos_payments_merchant_id"), ["merchant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pos_payments_state"), ["state"], unique=False
        )

    op.create_table(
        "pos_terminal_nonces",
        sa.Column("terminal_id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column(
            "expires_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_pos_terminal_nonces_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "terminal_id", "nonce", name=op.f("pk_pos_terminal_nonces")
        ),
    )
    with op.batch_alter_table("pos_terminal_nonces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pos_terminal_nonces_expires_at"),
            ["expires_at"],
            unique=False,
        )

    op.create_table(
        "pos_refunds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("out_refund_no", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "destination",
            sa.Enum(
                "original",
                "wallet",
                name="refunddestination",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("card_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "processing",
                "succeeded",
                "failed",
                name="posrefundstate",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("refund_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("failure", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "finished_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_pos_refunds_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["journal_entries.id"],
            name=op.f("fk_pos_refunds_entry_id_journal_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["pos_payments.id"],
            name=op.f("fk_pos_refunds_payment_id_pos_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pos_refunds")),
        sa.UniqueConstraint("out_refund_no", name=op.f("uq_pos_refunds_out_refund_no")),
    )
    with op.batch_alter_table("pos_refunds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pos_refunds_payment_id"), ["payment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pos_refunds_state"), ["state"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("pos_refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pos_refunds_state"))
        batch_op.drop_index(batch_op.f("ix_pos_refunds_payment_id"))

    op.drop_table("pos_refunds")
    with op.batch_alter_table("pos_terminal_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pos_terminal_nonces_expires_at"))

    op.drop_table("pos_terminal_nonces")
    with op.batch_alter_table("pos_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pos_payments_state"))
        batch_op.drop_index(batch_op.f("ix_pos_payments_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_pos_payments_created_at"))
        batch_op.drop_index(batch_op.f("ix_pos_payments_card_id"))

    op.drop_table("pos_payments")
    op.drop_table("pos_cashier_merchants")
    op.drop_table("pos_card_pins")
    with op.batch_alter_table("pos_campus_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pos_campus_codes_expires_at"))
        batch_op.drop_index(batch_op.f("ix_pos_campus_codes_card_id"))

    op.drop_table("pos_campus_codes")
