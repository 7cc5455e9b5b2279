"""``/healthz`` for load balancers, and the guard that refuses to serve an
un-migrated database."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIBlueprint, APIFlask
from flask import request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from campus.database import SchemaNotCurrent, db
from campus.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

bp = APIBlueprint("health", __name__, tag="Health")

# Paths served even before the schema is current: health, the API description and
# static files say nothing about the data.
_OPEN_PATHS = ("/healthz", "/openapi.json", "/docs", "/static/")


@bp.get("/healthz")
@bp.doc(summary="Database reachable and schema current", responses=[200, 503])
def healthz() -> tuple[dict[str, Any], int]:
    answer: dict[str, Any] = {"status": "ok", "database": "ok", "schema": "current"}
    try:
        db.session.execute(text("SELECT 1"))
        current, head = db.current_revision(), db.head_revision()
    except SQLAlchemyError:
        logger.exception("health_database_unreachable")
        return {"status": "fail", "database": "unreachable"}, 503
    if current != head:
        answer.update(status="fail", schema="outdated", current=current, head=head)
        return answer, 503
    return answer, 200


def init_app(app: APIFlask) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def _schema_current() -> None:
        if request.path.startswith(_OPEN_PATHS):
            return
        try:
            db.ensure_schema_current()
        except SchemaNotCurrent as error:
            logger.error("schema_not_current", extra={"problem": str(error)})
            raise ServiceUnavailable(str(error)) from error
