"""The SQLAlchemy engine, sessions, the declarative base and schema checks.

One ``Database`` object is created unbound at import time and bound to an app by
``init_app``. Sessions are scoped to the thread and removed when the app context
ends. Schema changes go through Alembic revisions in ``migrations/``; the app refuses
to serve requests until the database is at the newest one.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import DateTime, Engine, Enum, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker
from sqlalchemy.types import TypeDecorator

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware datetime, stored as UTC.

    SQLite has no time zones, so naive values read back would silently be taken
    for local time; this type refuses naive input and always returns UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Any
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware one is required")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Any
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime()}


def str_enum(
    enum_class: type[enum.Enum], length: int = 16, name: str | None = None
) -> Enum:
    """A column type storing an enum's values (not its names) as plain strings,
    checked by a constraint, the same on SQLite and PostgreSQL. Two columns of one
    table with the same enum need distinct constraint ``name``s."""
    return Enum(
        enum_class,
        name=name or enum_class.__name__.lower(),
        native_enum=False,
        length=length,
        create_constraint=True,
        values_callable=lambda members: [member.value for member in members],
    )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SchemaNotCurrent(RuntimeError):
    """The database is not at the newest migration."""


def _sqlite_transactions(engine: Engine) -> None:
    # pysqlite opens transactions lazily and not at all for some statements, which
    # breaks SAVEPOINT. Emitting BEGIN ourselves gives real transactions; in WAL
    # mode they are serialisable, and a writer that lost a race gets "database is
    # locked" rather than a lost update. SQLite is for development and tests; the
    # concurrency guarantees are tested on PostgreSQL.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


def make_engine(url: str, **options: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, **options)
        _sqlite_transactions(engine)
        return engine
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 40)
    # Recycling, not pre-ping: a ping costs a round trip on every checkout, which on
    # the payment path is a tenth of the work.
    options.setdefault("pool_recycle", 1800)
    return create_engine(url, **options)


class Database:
    """Engine and thread-scoped sessions for one app."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._factory = sessionmaker()
        self.session: scoped_session[Session] = scoped_session(self._factory)
        self._schema_checked = False

    def init_app(self, app: Flask) -> None:
        settings = app.extensions["campus.settings"]
        url = settings.sqlalchemy_url
        # Apps made again in one process (tests, the CLI) keep the engine and its
        # connection pool when the address is the same.
        if self.engine is None or self.engine.url.render_as_string(False) != url:
            self.bind(make_engine(url))
        app.extensions["campus.database"] = self

        @app.teardown_appcontext
        def _remove_session(exception: BaseException | None) -> None:
            self.session.remove()

    def bind(self, engine: Engine) -> None:
        if self.engine is not None and self.engine is not engine:
            self.session.remove()
            self.engine.dispose()
        self.engine = engine
        self._factory.configure(bind=engine)
        self._schema_checked = False

    def new_session(self) -> Session:
        """A session outside the thread's scope, for workers and jobs."""
        return self._factory()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """The scoped session inside one transaction: committed on success, rolled
        back on any exception."""
        session = self.session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise

    # -- schema -----------------------------------------------------------------

    def alembic_config(self) -> AlembicConfig:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["engine"] = self.engine
        return config

    # Each package keeps its own line of revisions (a branch from the first one),
    # so the schema is current when the database holds every line's head.

    def head_revision(self) -> str:
        heads = ScriptDirectory.from_config(self.alembic_config()).get_heads()
        return ",".join(sorted(heads))

    def current_revision(self) -> str:
        assert self.engine is not None
        with self.engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
        return ",".join(sorted(heads))

    def ensure_schema_current(self) -> None:
        """Raise ``SchemaNotCurrent`` naming the command to run, unless the
        database is at the newest revision. Checked once per process."""
        if self._schema_checked:
            return
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise SchemaNotCurrent(
                f"database schema is at {current or 'nothing'}, code expects {head}: "
                "run `flask --app wsgi db upgrade`"
            )
        self._schema_checked = True


db = Database()
