"""Errors a user can cause, and the one JSON shape every API answers them in.

The tree::

    CampusError                 stable ``code``, HTTP ``status``, translated message
    ├── InvalidInput            400  the request itself is wrong (amount, field)
    │   └── InvalidAmount       400  an amount that is not exact fen within limits
    ├── AuthenticationRequired  401  nobody is signed in
    ├── Forbidden               403  signed in, but the role does not allow it
    ├── NotFound                404  an id that names nothing we have
    ├── Conflict                409  the state of the thing forbids the request
    │   ├── CardNotActive       409  a frozen, lost or closed card
    │   └── InsufficientFunds   409  a wallet would go below zero
    └── ServiceUnavailable      503  the database or schema is not ready

Every answer is RFC 9457 problem details (``application/problem+json``) with our own
stable ``code`` beside ``title`` and ``detail``: clients branch on ``code``, people
read ``detail`` in the language they asked for. A person's browser opening a page
(not ``/api/``, asking for HTML before JSON) gets the same problem as a page
instead, with the same status and headers: a payer who scans a stale QR code or a
graduate following an old link reads a sentence, not JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import Response, jsonify, render_template, request
from flask_babel import LazyString, lazy_gettext
from werkzeug.http import HTTP_STATUS_CODES

logger = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://campus-card.invalid/problems/"


class CampusError(Exception):
    status = 500
    code = "internal_error"
    title: LazyString | str = lazy_gettext("Internal error")

    def __init__(self, detail: LazyString | str | None = None, **fields: Any) -> None:
        self.detail = detail if detail is not None else self.title
        self.fields = fields
        super().__init__(str(self.detail))

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": str(self.title),
            "status": self.status,
            "code": self.code,
            "detail": str(self.detail),
        }
        body.update(self.fields)
        return body


class InvalidInput(CampusError):
    status = 400
    code = "invalid_input"
    title = lazy_gettext("Invalid input")


class InvalidAmount(InvalidInput):
    code = "invalid_amount"
    title = lazy_gettext("Invalid amount")


class AuthenticationRequired(CampusError):
    status = 401
    code = "authentication_required"
    title = lazy_gettext("Please sign in")


class Forbidden(CampusError):
    status = 403
    code = "forbidden"
    title = lazy_gettext("Not allowed")


class NotFound(CampusError):
    status = 404
    code = "not_found"
    title = lazy_gettext("Not found")


class Conflict(CampusError):
    status = 409
    code = "conflict"
    title = lazy_gettext("Conflict")


class CardNotActive(Conflict):
    code = "card_not_active"
    title = lazy_gettext("Card is not active")


class InsufficientFunds(Conflict):
    code = "insufficient_funds"
    title = lazy_gettext("Insufficient balance")


class ServiceUnavailable(CampusError):
    status = 503
    code = "service_unavailable"
    title = lazy_gettext("Service unavailable")


def problem_response(body: dict[str, Any], headers: Any = None) -> Response:
    response = jsonify(body)
    response.status_code = body["status"]
    response.mimetype = "application/problem+json"
    if headers:
        response.headers.update(headers)
    return response


# Paths whose callers are programs (terminals, channels, API clients), answered
# in JSON whatever they accept.
_MACHINE_PATHS = ("/api/", "/notify/", "/openapi.json", "/docs")


def wants_page() -> bool:
    """Whether the request is a browser opening one of our pages: it accepts HTML
    at a higher quality than JSON (no ``Accept``, or ``*/*``, is JSON)."""
    if request.path.startswith(_MACHINE_PATHS):
        return False
    best = request.accept_mimetypes.best_match(
        ["application/problem+json", "application/json", "text/html"]
    )
    return best == "text/html"


def error_response(body: dict[str, Any], headers: Any = None) -> Response:
    """The problem as JSON, or as a page for a browser (``wants_page``)."""
    if not wants_page():
        return problem_response(body, headers)
    response = Response(
        render_template("error.html", problem=body),
        status=body["status"],
        mimetype="text/html",
    )
    if headers:
        response.headers.update(headers)
    return response


# Our words for the statuses werkzeug answers itself (its own are English only).
_HTTP_TITLES = {
    400: lazy_gettext("Invalid input"),
    401: lazy_gettext("Please sign in"),
    403: lazy_gettext("Not allowed"),
    404: lazy_gettext("Not found"),
    405: lazy_gettext("This address does not take that kind of request"),
    413: lazy_gettext("The upload is too large"),
    415: lazy_gettext("This kind of content is not accepted here"),
    422: lazy_gettext("Invalid input"),
    429: lazy_gettext("Too many requests; please wait a minute and try again"),
}

_FIELDS_INVALID = lazy_gettext("Some fields are missing or not valid.")


def init_app(app: APIFlask) -> None:
    @app.errorhandler(CampusError)
    def _campus_error(error: CampusError) -> Response:
        if error.status >= 500:
            logger.error(
                "request_failed",
                extra={"code": error.code, "path": request.path},
            )
        return error_response(error.problem())

    @app.error_processor
    def _http_error(error: HTTPError) -> Response:
        # APIFlask routes both its own HTTPError and werkzeug's through here: input
        # validation, 404 for unknown routes, 405, 413 and so on.
        code = {
            400: "invalid_input",
            401: "authentication_required",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            415: "unsupported_media_type",
            422: "invalid_input",
            429: "rate_limited",
        }.get(error.status_code, "http_error")
        title = _HTTP_TITLES.get(error.status_code)
        message = str(error.message)
        detail: LazyString | str = message
        if message == app.config["VALIDATION_ERROR_DESCRIPTION"]:
            detail = _FIELDS_INVALID
        elif title is not None and message == HTTP_STATUS_CODES.get(error.status_code):
            # werkzeug's own phrase ("Not Found") says no more than our title.
            detail = title
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + code,
            "title": str(title) if title is not None else message,
            "status": error.status_code,
            "code": code,
            "detail": str(detail),
        }
        if error.detail:
            body["errors"] = error.detail
        return error_response(body, error.headers)
