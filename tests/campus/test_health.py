from __future__ import annotations

import logging

from campus import create_app
from campus.database import db


def test_healthz_reports_database_and_schema(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "schema": "current"}


def test_healthz_answers_503_when_the_database_is_unreachable(
    settings, engine, tmp_path, caplog
):
    # A folder that does not exist: SQLite cannot open the file, as a server that
    # refuses connections would fail on PostgreSQL.
    unreachable = f"sqlite:///{tmp_path / 'no-such-folder' / 'campus.sqlite3'}"
    app = create_app(settings, database_url=unreachable)
    try:
        response = app.test_client().get("/healthz")
    finally:
        # Give the suite's engine back to the rest of the suite.
        db.bind(engine)

    # A load balancer reads the status; a person reads which part failed.
    assert response.status_code == 503
    assert response.json == {"status": "fail", "database": "unreachable"}
    assert any(
        record.name == "campus.health"
        and record.levelno == logging.ERROR
        and record.getMessage() == "health_database_unreachable"
        for record in caplog.records
    )
