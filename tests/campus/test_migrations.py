"""The Alembic revisions and the models describe the same schema."""

from __future__ import annotations

from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from campus.database import db
from campus.models import metadata


def test_autogenerate_finds_no_difference(app, engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "render_as_batch": True}
        )
        differences = compare_metadata(context, metadata)

    assert differences == []


def test_every_line_is_at_its_head(app):
    assert db.current_revision() == db.head_revision()
    assert "0001" not in db.head_revision().split(",")


def test_downgrade_to_base_and_back_up(app, engine):
    # On a database of its own, so the shared one stays migrated.
    from campus.database import make_engine

    url = engine.url
    if url.get_backend_name() == "sqlite":
        scratch_url = url.set(database=str(url.database) + ".scratch")
        scratch = make_engine(scratch_url.render_as_string(False))
    else:
        import uuid

        from sqlalchemy import text

        name = f"scratch_{uuid.uuid4().hex[:8]}"
        admin = make_engine(
            url.set(database="postgres").render_as_string(False),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        scratch = make_engine(url.set(database=name).render_as_string(False))
    config = db.alembic_config()
    config.attributes["engine"] = scratch

    alembic_command.upgrade(config, "heads")
    alembic_command.downgrade(config, "base")
    alembic_command.upgrade(config, "heads")

    with scratch.connect() as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
    assert ",".join(sorted(heads)) == db.head_revision()
    scratch.dispose()
    if url.get_backend_name() != "sqlite":
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
