"""transcripts: records, registry, batches, share links

Revision ID: 0101
Revises: 0001
Create Date: 2026-12-03 19:26:24.039361
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import campus.database

revision = "0101"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcript_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=False),
        sa.Column("college", sa.String(length=128), nullable=True),
        sa.Column("graduation_year", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "finished_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_batches")),
    )
    op.create_table(
        "transcript_courses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name_zh", sa.String(length=128), nullable=False),
        sa.Column("name_en", sa.String(length=256), nullable=False),
        sa.Column("credits", sa.Numeric(precision=4, scale=1), nullable=False),
        sa.Column(
            "category",
            sa.Enum(
                "required",
                "elective",
                "general",
                "practice",
                name="coursecategory",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_courses")),
        sa.UniqueConstraint("code", name=op.f("uq_transcript_courses_code")),
    )
    op.create_table(
        "transcript_students",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column(
            "gender",
            sa.Enum(
                "male",
                "female",
                "unstated",
                name="gender",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("college_zh", sa.String(length=128), nullable=False),
        sa.Column("college_en", sa.String(length=128), nullable=False),
        sa.Column("major_zh", sa.String(length=128), nullable=False),
        sa.Column("major_en", sa.String(length=128), nullable=False),
        sa.Column(
            "programme",
            sa.Enum(
                "undergraduate",
                "master",
                "doctorate",
                name="programme",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("degree_zh", sa.String(length=64), nullable=False),
        sa.Column("degree_en", sa.String(length=128), nullable=False),
        sa.Column("enrolled_on", sa.Date(), nullable=False),
        sa.Column("graduated_on", sa.Date(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "enrolled",
                "graduated",
                "suspended",
                "withdrawn",
                name="studystatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "updated_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["people.id"],
            name=op.f("fk_transcript_students_person_id_people"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_students")),
        sa.UniqueConstraint("person_id", name=op.f("uq_transcript_students_person_id")),
    )
    op.create_table(
        "transcript_batch_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "issued",
                "failed",
                name="itemstatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "updated_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["transcript_batches.id"],
            name=op.f("fk_transcript_batch_items_batch_id_transcript_batches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["transcript_students.id"],
            name=op.f("fk_transcript_batch_items_student_id_transcript_students"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_batch_items")),
        sa.UniqueConstraint(
            "batch_id",
            "student_id",
            name=op.f("uq_transcript_batch_items_batch_id_student_id"),
        ),
    )
    with op.batch_alter_table("transcript_batch_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transcript_batch_items_batch_id"), ["batch_id"], unique=False
        )

    op.create_table(
        "transcript_grades",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("term", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Numeric(precision=5, scale=1), nullable=True),
        sa.Column("grade", sa.String(length=16), nullable=True),
        sa.Column("grade_points", sa.Numeric(precision=3, scale=2), nullable=True),
        sa.Column(
            "exam_kind",
            sa.Enum(
                "regular",
                "makeup",
                "retake",
                name="examkind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["course_id"],
            ["transcript_courses.id"],
            name=op.f("fk_transcript_grades_course_id_transcript_courses"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["transcript_students.id"],
            name=op.f("fk_transcript_grades_student_id_transcript_students"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_grades")),
        sa.UniqueConstraint(
            "student_id",
            "course_id",
            "term",
            "exam_kind",
            name=op.f("uq_transcript_grades_student_id_course_id_term_exam_kind"),
        ),
    )
    with op.batch_alter_table("transcript_grades", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transcript_grades_student_id"), ["student_id"], unique=False
        )

    op.create_table(
        "transcript_issuances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column("document_version", sa.Integer(), nullable=False),
        sa.Column("layout_version", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=24), nullable=False),
        sa.Column(
            "issued_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "valid_until", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "status",
            sa.Enum(
                "valid",
                "revoked",
                "superseded",
                name="issuancestatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column(
            "status_changed_at",
            campus.database.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("superseded_by_id", sa.Integer(), nullable=True),
        sa.Column("storage_key", sa.String(length=128), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("signature_level", sa.String(length=8), nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("batch_item_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_item_id"],
            ["transcript_batch_items.id"],
            name=op.f("fk_transcript_issuances_batch_item_id_transcript_batch_items"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["transcript_students.id"],
            name=op.f("fk_transcript_issuances_student_id_transcript_students"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by_id"],
            ["transcript_issuances.id"],
            name=op.f("fk_transcript_issuances_superseded_by_id_transcript_issuances"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_issuances")),
        sa.UniqueConstraint(
            "batch_item_id", name=op.f("uq_transcript_issuances_batch_item_id")
        ),
        sa.UniqueConstraint("code", name=op.f("uq_transcript_issuances_code")),
        sa.UniqueConstraint("sha256", name=op.f("uq_transcript_issuances_sha256")),
        sa.UniqueConstraint(
            "student_id",
            "document_version",
            name=op.f("uq_transcript_issuances_student_id_document_version"),
        ),
    )
    with op.batch_alter_table("transcript_issuances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transcript_issuances_student_id"),
            ["student_id"],
            unique=False,
        )

    op.create_table(
        "transcript_issuance_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuance_id", sa.Integer(), nullable=False),
        sa.Column("at", campus.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "action",
            sa.Enum(
                "issued",
                "revoked",
                "superseded",
                name="issuanceaction",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["issuance_id"],
            ["transcript_issuances.id"],
            name=op.f("fk_transcript_issuance_events_issuance_id_transcript_issuances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_issuance_events")),
    )
    with op.batch_alter_table("transcript_issuance_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transcript_issuance_events_issuance_id"),
            ["issuance_id"],
            unique=False,
        )

    op.create_table(
        "transcript_share_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuance_id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=128), nullable=True),
        sa.Column(
            "created_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", campus.database.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "revoked_at", campus.database.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["issuance_id"],
            ["transcript_issuances.id"],
            name=op.f("fk_transcript_share_links_issuance_id_transcript_issuances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_share_links")),
        sa.UniqueConstraint(
            "token_sha256", name=op.f("uq_transcript_share_links_token_sha256")
        ),
    )
    with op.batch_alter_table("transcript_share_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transcript_share_links_issuance_id"),
            ["issuance_id"],
            unique=False,
        )

    op.create_table(
        "transcript_share_link_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("at", campus.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "opened",
                "downloaded",
                "verified",
                "refused",
                name="linkeventkind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("detail", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["transcript_share_links.id"],
            name=op.f("fk_transcript_share_link_events_link_id_transcript_share_links"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_share_link_events")),
    )
    with op.batch_alter_table("transcript_share_link_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transcript_share_link_events_link_id"),
            ["link_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("transcript_share_link_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transcript_share_link_events_link_id"))

    op.drop_table("transcript_share_link_events")
    with op.batch_alter_table("transcript_share_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transcript_share_links_issuance_id"))

    op.drop_table("transcript_share_links")
    with op.batch_alter_table("transcript_issuance_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transcript_issuance_events_issuance_id"))

    op.drop_table("transcript_issuance_events")
    with op.batch_alter_table("transcript_issuances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transcript_issuances_student_id"))

    op.drop_table("transcript_issuances")
    with op.batch_alter_table("transcript_grades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transcript_grades_student_id"))

    op.drop_table("transcript_grades")
    with op.batch_alter_table("transcript_batch_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transcript_batch_items_batch_id"))

    op.drop_table("transcript_batch_items")
    op.drop_table("transcript_students")
    op.drop_table("transcript_courses")
    op.drop_table("transcript_batches")
