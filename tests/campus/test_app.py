from __future__ import annotations

from alembic import command as alembic_command

from campus import create_app
from campus.database import db


def test_openapi_description_is_served(client):
    spec = client.get("/openapi.json").json

    assert spec["openapi"].startswith("3.")
    assert "/api/cards/{number}/status" in spec["paths"]
    assert "/healthz" in spec["paths"]


def test_errors_are_problem_details_with_a_stable_code(client):
    response = client.get("/api/no-such-thing")

    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "not_found"
    assert {"type", "title", "status", "detail"} <= set(response.json)


def test_validation_errors_say_which_field(client, sign_in_operator):
    from campus.auth import Role

    sign_in_operator(Role.ADMIN)

    response = client.post("/api/cards", json={"offline_purse": "perhaps"})

    assert response.status_code == 400
    assert response.json["code"] == "invalid_input"
    assert "holder_number" in str(response.json["errors"])


def test_pages_are_chinese_first_and_english_on_request(client):
    chinese = client.get("/").get_data(as_text=True)
    english = client.get("/?lang=en").get_data(as_text=True)
    remembered = client.get("/").get_data(as_text=True)

    assert "校园卡" in chinese and 'lang="zh-CN"' in chinese
    assert "Campus Card" in english and 'lang="en"' in english
    assert 'lang="en"' in remembered


def test_an_unmigrated_database_is_refused_naming_the_command(
    settings, engine, tmp_path
):
    app = create_app(settings, database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        client = app.test_client()

        refused = client.get("/api/me/cards")
        health = client.get("/healthz")

        assert refused.status_code == 503
        assert "flask --app wsgi db upgrade" in refused.json["detail"]
        assert health.status_code == 503 and health.json["schema"] == "outdated"

        with app.app_context():
            alembic_command.upgrade(db.alembic_config(), "heads")
        assert client.get("/healthz").status_code == 200
    finally:
        # Give the suite's engine back to the rest of the suite.
        db.bind(engine)
