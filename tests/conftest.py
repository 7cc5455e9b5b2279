"""Fixtures shared by every test: a real database, a fresh app per test.

The database is SQLite in a temporary folder, or PostgreSQL when ``DATABASE_URL``
points at a server: then each pytest-xdist worker gets its own database, created
empty and migrated with the real Alembic revisions. Every test commits for real
(concurrency tests need it) and the tables are emptied after it.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from alembic import command as alembic_command
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from campus import create_app
from campus.auth import Role, create_operator
from campus.database import Base, db, make_engine
from campus.people import Person, PersonKind
from campus.settings import Settings
from payments import ledger
from payments.cards import Card, open_card
from payments.merchants import Merchant, MerchantKind, open_merchant

logger = logging.getLogger(__name__)

POSTGRES_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = POSTGRES_URL.startswith("postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "unbalances_ledger(reason): the test breaks the ledger on purpose; the "
        "check after it is skipped",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if ON_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run in which no test passed fails, even if every test was skipped: CI
    must never be green because nothing ran."""
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller counts for all of them
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or session.config.option.collectonly:
        return
    if exitstatus == 0 and not reporter.stats.get("passed"):
        reporter.write_line("no test passed: failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def database_url(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[str]:
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
        return
    server = make_url(POSTGRES_URL)
    # Unique per run as well as per worker: two runs on one server must not share.
    name = f"{server.database or 'campus'}_test_{worker_id}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(
        server.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    db.session.remove()
    # A connection some test left checked out (held by an object only garbage
    # keeps) goes back to the pool now, while its database still exists, rather
    # than failing its reset at exit after the database was dropped.
    gc.collect()
    if db.engine is not None:
        db.engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def instance_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One instance folder per test session: generated keys and the development
    PKI are made once, as on a real first run."""
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    db.bind(engine)
    alembic_command.upgrade(db.alembic_config(), "heads")
    yield engine


@pytest.fixture
def settings(database_url: str, instance_path: Path, engine: Engine) -> Settings:
    return Settings(
        mode="development",
        instance_path=instance_path,
        database_url=database_url,
        scheduler=False,
        base_url="http://localhost",
    )


@pytest.fixture
def app(settings: Settings, engine: Engine, request: pytest.FixtureRequest) -> Iterator:
    app = create_app(settings)
    app.config["TESTING"] = True
    with app.app_context():
        yield app
    db.session.remove()
    try:
        problems = _ledger_problems(engine, request.node)
    finally:
        empty_tables(engine)
    if problems:
        pytest.fail(
            "the test left the ledger unbalanced (flask ledger check):\n"
            + "\n".join(f"  {p.account or '-'}: {p.description}" for p in problems),
            pytrace=False,
        )


def _ledger_problems(engine: Engine, item: pytest.Item) -> list[ledger.LedgerProblem]:
    marker = item.get_closest_marker("unbalances_ledger")
    if marker is not None:
        if not (marker.args or marker.kwargs.get("reason")):
            pytest.fail("unbalances_ledger needs a reason", pytrace=False)
        return []
    # A session of its own, not the app's: it sees only what the test committed,
    # which is what a later ``flask ledger check`` would see.
    with Session(engine) as session:
        return ledger.check_ledger(session)


def empty_tables(engine: Engine) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    if engine.dialect.name != "postgresql":
        with engine.begin() as connection:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))
        return
    truncate = text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    try:
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '20s'"))
            connection.execute(truncate)
    except OperationalError:
        # A test that failed half way can leave a connection in a transaction,
        # kept alive by its traceback; TRUNCATE would wait on it for ever and hang
        # the whole run. End such connections of this worker's database, once.
        with engine.begin() as connection:
            ended = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state LIKE 'idle in transaction%'"
                )
            ).all()
        with engine.begin() as connection:
            connection.execute(truncate)
        logger.warning(
            "test_tables_emptied_after_ending_connections", extra={"ended": len(ended)}
        )


@pytest.fixture
def session(app) -> Session:  # type: ignore[no-untyped-def]
    return db.session()


@pytest.fixture
def client(app) -> FlaskClient:  # type: ignore[no-untyped-def]
    return app.test_client()


_operators = itertools.count(1)


@pytest.fixture
def sign_in_operator(session: Session, client):
    def sign_in(*roles: Role) -> int:
        """Sign ``client`` in as a new operator holding ``roles``; their id."""
        username = f"op{next(_operators)}"
        operator = create_operator(
            session, username, "correct horse battery", list(roles)
        )
        session.commit()
        response = client.post(
            "/api/operators/sign-in",
            json={"username": username, "password": "correct horse battery"},
        )
        assert response.status_code == 200
        return operator.id

    return sign_in


class _Forward:
    """A WSGI app that forwards to one set after the server has its port."""

    target: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.target(environ, start_response)


@dataclasses.dataclass
class LiveApp:
    """The app served on a real loopback port, with its sandbox mounted."""

    app: Any
    url: str

    @property
    def sandbox(self) -> Any:
        return self.app.extensions["campus.sandbox"]


@pytest.fixture
def live_app(app, settings: Settings) -> Iterator[LiveApp]:  # type: ignore[no-untyped-def]
    """A second app object like ``app`` but served over HTTP, so that the SDKs, the
    sandbox's notifications and a browser reach it as in production. Its sandbox's
    clock and faults are reset around each test."""
    from sandbox.core import LoopbackServer

    forward = _Forward()
    server = LoopbackServer(forward).start()
    served = create_app(settings, base_url=server.url)
    forward.target = served
    live = LiveApp(served, server.url)
    live.sandbox.clock.reset()
    live.sandbox.faults.clear()
    # The sandbox's payers live as long as the test session; a worker's hundredth
    # top-up must not find demo-1's wallet empty.
    for gateway in live.sandbox.gateways.values():
        gateway.reset_payers()
    yield live
    live.sandbox.clock.reset()
    live.sandbox.faults.clear()
    server.stop()


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
}


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright, headless; no browser is downloaded.
    Started per test: Playwright's sync API runs an event loop while it is open,
    and another test module's own Playwright must not find one running."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


# -- payments: real cards, merchants and a signed-in student's browser --------------

_numbers = itertools.count(1)


@pytest.fixture
def make_card(session: Session):
    def make(balance_fen: int = 0, **options) -> Card:
        serial = next(_numbers)
        person = Person(
            number=f"S{serial:07d}",
            kind=PersonKind.STUDENT,
            name_zh=f"测试{serial}",
            name_en=f"Test {serial}",
        )
        session.add(person)
        card = open_card(
            session, person, actor="test", number=f"8800{serial:08d}", **options
        )
        if balance_fen:
            ledger.transfer(
                session,
                kind=ledger.EntryKind.OPENING,
                idempotency_ref=f"opening:{card.number}",
                source=ledger.suspense_account(session),
                destination=card.wallet,
                amount_fen=balance_fen,
            )
        session.commit()
        return card

    return make


@pytest.fixture
def merchant(session: Session) -> Merchant:
    merchant = open_merchant(
        session,
        f"M{next(_numbers):05d}",
        "测试窗口",
        "Test window",
        MerchantKind.CANTEEN_WINDOW,
    )
    session.commit()
    return merchant


@pytest.fixture
def student_browser(live_app, make_card):
    card = make_card(balance_fen=1000)

    def browser(headers: dict[str, str]) -> requests.Session:
        session = requests.Session()
        session.headers.update(headers)
        signed_in = session.post(
            f"{live_app.url}/sign-in/dev?next=/card",
            data={"number": card.person.number},
            timeout=10,
        )
        assert signed_in.url.endswith("/card")
        return session

    browser.card = card
    return browser
