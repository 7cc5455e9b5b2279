"""Alembic environment: the app's engine and every package's models."""

from __future__ import annotations

from alembic import context

from campus.models import metadata

config = context.config


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from campus.database import make_engine
        from campus.settings import Settings

        engine = make_engine(Settings.from_environ().sqlalchemy_url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
