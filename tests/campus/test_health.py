from __future__ import annotations


def test_healthz_reports_database_and_schema(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "schema": "current"}
