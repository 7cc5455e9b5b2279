"""Public verification pages and JSON API, for employers without an account.

Pages (phone first, Chinese unless ``?lang=en``):

- ``/verify``: upload a PDF, or type a verification code;
- ``/v/<code>``: where every page's QR code points: the registered copy's facts
  and status, with ``/v/<code>/transcript.pdf`` to view or download it;
- ``POST /share/<token>/verify``: check the file a graduate's share link offers;
  the graduate's link log shows the check.

API (in ``/openapi.json``, tag "Verification"): ``POST /api/verify`` (upload),
``GET /api/verify/codes/<code>``, ``POST /api/verify/share``; and, for the
registrar and auditors, an issuance's access log and counts of answers.

Every look-up and upload is limited per client IP address (Flask-Limiter; where
the counters live is ``CAMPUS_RATE_LIMIT_STORAGE``). Behind a reverse proxy the
app must see the client's address (werkzeug's ``ProxyFix``), or every visitor
shares the proxy's. Every answer carries a strict Content-Security-Policy, no
referrer (a code in a URL must not travel to another site), ``nosniff`` and
``no-store``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from apiflask import APIBlueprint, Schema, fields
from apiflask.validators import Length, Range
from flask import Flask, g, redirect, render_template, request, send_file, url_for
from flask_babel import gettext
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response

from campus.auth import Role, requires_role
from campus.database import db, utcnow
from campus.errors import CampusError, NotFound, problem_response
from transcripts import codes, sharing
from transcripts.verification import (
    STATUS_WORDS,
    FileTooLarge,
    NotAPdf,
    Verification,
    VerificationOutcome,
    Via,
    access_log,
    counts_since,
    verification_service,
)
from transcripts.views import limiter

logger = logging.getLogger(__name__)

T = TypeVar("T")

bp = APIBlueprint(
    "verification", __name__, tag="Verification", template_folder="templates"
)


def client_ip() -> str:
    """The rate-limit key: the client's address as the app sees it."""
    return f"ip:{request.remote_addr or 'unknown'}"


def _config() -> Any:
    return verification_service().config


def _wrong_code(response: Response) -> bool:
    return response.status_code in (400, 404)


_all_codes = limiter.shared_limit(
    lambda: _config().code_limit, scope="verification-codes", key_func=client_ip
)
_wrong_codes = limiter.shared_limit(
    lambda: _config().wrong_code_limit,
    scope="verification-wrong-codes",
    key_func=client_ip,
    deduct_when=_wrong_code,
)
_uploads = limiter.shared_limit(
    lambda: _config().upload_limit, scope="verification-uploads", key_func=client_ip
)


def code_limits(view: Callable[..., T]) -> Callable[..., T]:
    """Every code look-up counts against one limit, and a mistyped or unknown
    code also against a stricter one."""
    return _all_codes(_wrong_codes(view))  # type: ignore[no-any-return]


# -- headers ---------------------------------------------------------------------------


def content_security_policy(mimetype: str, nonce: str | None) -> str:
    if mimetype == "text/html" and nonce:
        return (
            "default-src 'none'; "
            f"style-src 'self' 'nonce-{nonce}'; "
            "img-src 'self' data:; "
            "form-action 'self'; "
            "base-uri 'none'; "
            "frame-ancestors 'none'"
        )
    if mimetype == "application/pdf":
        # Browsers show a PDF in their own viewer, which a document policy
        # could break; only framing by other sites is refused.
        return "frame-ancestors 'none'"
    return "default-src 'none'; frame-ancestors 'none'"


def secure(response: Response, nonce: str | None) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(
        response.mimetype or "", nonce
    )
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Cache-Control"] = "no-store"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    return response


MARKS = {"passed": "✓", "failed": "✗", "unknown": "?", "not applicable": "–"}


@bp.context_processor
def _words() -> dict[str, Any]:
    return {"status_words": STATUS_WORDS, "marks": MARKS}


@bp.before_request
def _make_nonce() -> None:
    g.csp_nonce = secrets.token_urlsafe(16)


@bp.after_request
def _secure(response: Response) -> Response:
    return secure(response, g.get("csp_nonce"))


@bp.errorhandler(TooManyRequests)
def _too_many(error: TooManyRequests) -> Any:
    logger.warning(
        "verification_rate_limited",
        extra={"endpoint": request.endpoint, "limit": str(error.description)},
    )
    if request.path.startswith("/api/"):
        return problem_response(
            {
                "type": "https://campus-card.invalid/problems/rate_limited",
                "title": "Too many requests",
                "status": 429,
                "code": "rate_limited",
                "detail": str(error.description),
            },
            {"Retry-After": "60"},
        )
    return _home(
        429,
        gettext(
            "Too many look-ups from your network in a short time; please wait a "
            "minute and try again."
        ),
    )


# -- shared steps ----------------------------------------------------------------------


def _answered(work: Callable[[Any], T]) -> tuple[T | None, CampusError | None]:
    """Run ``work`` in one transaction that commits even when it ends in a
    problem, so that what it recorded first (an unknown code, a refused share
    link) stays in the logs. The problem is handed back to be answered."""
    with db.transaction() as session:
        try:
            return work(session), None
        except CampusError as problem:
            return None, problem


def _read_upload(upload: FileStorage | None) -> bytes:
    """The uploaded bytes, reading no more than one byte past the limit."""
    if upload is None:
        raise NotAPdf("empty")
    limit = _config().max_bytes
    try:
        data = upload.stream.read(limit + 1)
    finally:
        # A large upload was spooled to a temporary file; it goes now, not
        # whenever the collector finds it.
        upload.close()
    if len(data) > limit:
        raise FileTooLarge(limit)
    if not data:
        raise NotAPdf("empty")
    return data


def _home(status: int, error: str | None = None, code: str = "") -> Any:
    return (
        render_template("verification/index.html", error=error, typed=code),
        status,
    )


def _look_up(code: str, via: Via) -> Callable[[Any], Verification]:
    def work(session: Any) -> Verification:
        answer, _ = verification_service().look_up_code(
            session, code, via=via, now=utcnow()
        )
        return answer

    return work


def _registered_pdf(code: str, via: Via) -> Response:
    service = verification_service()

    def work(session: Any) -> bytes:
        _, issuance = service.look_up_code(session, code, via=via, now=utcnow())
        return service.registered_copy(issuance)

    pdf, problem = _answered(work)
    if problem is not None:
        raise problem
    assert pdf is not None
    canonical = codes.normalise(code)
    response = send_file(
        io.BytesIO(pdf),
        mimetype="application/pdf",
        as_attachment=request.args.get("download") == "1",
        download_name=f"transcript-{canonical}.pdf",
        max_age=0,
    )
    return response


# -- pages -----------------------------------------------------------------------------


@bp.get("/verify")
@bp.doc(hide=True)
def home() -> Any:
    return _home(200)


@bp.post("/verify")
@bp.doc(hide=True)
@_uploads
def upload_page() -> Any:
    service = verification_service()
    try:
        data = _read_upload(request.files.get("file"))
    except CampusError as problem:
        return _home(problem.status, str(problem.detail))
    verification, problem = _answered(
        lambda session: service.verify_file(session, data, via=Via.PAGE, now=utcnow())
    )
    if problem is not None:
        return _home(problem.status, str(problem.detail))
    return render_template("verification/answer.html", v=verification)


@bp.get("/v")
@bp.doc(hide=True)
@code_limits
def code_form() -> Any:
    """The code form's target: a typo is answered here, without a look-up; a
    well-formed code goes on to its page (the QR codes' address)."""
    typed = request.args.get("code", "")
    try:
        canonical = codes.normalise(typed)
    except codes.MalformedCode as problem:
        logger.info("verification_code_malformed", extra={"reason": problem.reason})
        return _home(400, str(problem.detail), typed[:40])
    return redirect(url_for("verification.code_page", code=canonical))


@bp.get("/v/<code>")
@bp.doc(hide=True)
@code_limits
def code_page(code: str) -> Any:
    answer, problem = _answered(_look_up(code, Via.PAGE))
    if problem is not None:
        return _home(problem.status, str(problem.detail), code[:40])
    return render_template("verification/code.html", v=answer)


@bp.get("/v/<code>/transcript.pdf")
@bp.doc(hide=True)
@code_limits
def registered_file(code: str) -> Any:
    try:
        return _registered_pdf(code, Via.PAGE)
    except CampusError as problem:
        return _home(problem.status, str(problem.detail), code[:40])


@bp.post("/share/<token>/verify")
@bp.doc(hide=True)
@_uploads
def share_page(token: str) -> Any:
    service = verification_service()
    answer, problem = _answered(
        lambda session: service.verify_link(session, token, via=Via.PAGE, now=utcnow())
    )
    if isinstance(problem, sharing.LinkUnavailable):
        return render_template("transcripts/shared.html", refusal=problem), 404
    if problem is not None:
        return _home(problem.status, str(problem.detail))
    return render_template("verification/answer.html", v=answer)


# -- JSON API --------------------------------------------------------------------------

OUTCOMES = ", ".join(outcome.value for outcome in VerificationOutcome)


class VerifyFileIn(Schema):
    file = fields.File(
        required=True, metadata={"description": "The transcript PDF, as received."}
    )


class ShareIn(Schema):
    token = fields.String(
        required=True,
        validate=Length(min=1, max=256),
        metadata={"description": "The token of a share link (/share/<token>)."},
    )


class CheckOut(Schema):
    name = fields.String(
        metadata={
            "description": "integrity, coverage, issuer, timestamp, revocation or "
            "registry"
        }
    )
    outcome = fields.String(
        metadata={"description": "passed, failed, unknown or not applicable"}
    )
    label = fields.String(metadata={"description": "What was checked, for people."})
    detail = fields.String(metadata={"description": "Technical detail (English)."})


class IssuanceFactsOut(Schema):
    code = fields.String(metadata={"description": "Verification code"})
    document_version = fields.Integer()
    university_zh = fields.String()
    university_en = fields.String()
    registrar_zh = fields.String()
    registrar_en = fields.String()
    name_zh = fields.String()
    name_en = fields.String()
    college_zh = fields.String()
    college_en = fields.String()
    major_zh = fields.String()
    major_en = fields.String()
    degree_zh = fields.String()
    degree_en = fields.String()
    issued_at = fields.DateTime()
    valid_until = fields.DateTime()
    status = fields.String(
        metadata={"description": "valid, revoked, superseded or expired"}
    )
    status_reason = fields.String(allow_none=True)
    status_changed_at = fields.DateTime(allow_none=True)


class SignatureOut(Schema):
    signer = fields.String(allow_none=True)
    signed_at = fields.DateTime(allow_none=True)
    signing_time_source = fields.String(
        allow_none=True, metadata={"description": "timestamp or claimed"}
    )
    level = fields.String(allow_none=True, metadata={"description": "PAdES level"})
    summary = fields.String(
        allow_none=True, metadata={"description": "The validator's bottom line."}
    )


class VerificationOut(Schema):
    outcome = fields.String(
        metadata={"description": f"Stable outcome code: one of {OUTCOMES}."}
    )
    reliable = fields.Boolean(
        metadata={
            "description": "True only when the file (or the registered copy) is the "
            "university's and its status is valid today."
        }
    )
    status = fields.String(
        allow_none=True,
        metadata={"description": "Registry status: valid, revoked, superseded, "
                  "expired; null when no issuance was found."},
    )  # fmt: skip
    headline = fields.String(metadata={"description": "The answer in a few words."})
    message = fields.String(metadata={"description": "The answer explained."})
    status_message = fields.String(allow_none=True)
    matched = fields.String(
        allow_none=True,
        metadata={"description": "file, or signed_revision when the file adds "
                  "later revisions to a registered one."},
    )  # fmt: skip
    issuance = fields.Nested(IssuanceFactsOut, allow_none=True)
    signature = fields.Nested(SignatureOut, allow_none=True)
    checks = fields.List(fields.Nested(CheckOut))
    registered_copy_url = fields.String(allow_none=True)


class LogEntryOut(Schema):
    at = fields.DateTime()
    way = fields.String(metadata={"description": "file, code or link"})
    via = fields.String(metadata={"description": "page or api"})
    outcome = fields.String()


class DaysIn(Schema):
    days = fields.Integer(load_default=7, validate=Range(min=1, max=366))


def verification_out(verification: Verification) -> dict[str, Any]:
    facts = verification.issuance
    status = verification.status_sentence
    return {
        "outcome": verification.outcome.value,
        "reliable": verification.reliable,
        "status": verification.status,
        "headline": str(verification.headline),
        "message": str(verification.explanation),
        "status_message": str(status) if status is not None else None,
        "matched": verification.matched,
        "issuance": dataclasses.asdict(facts) if facts is not None else None,
        "signature": (
            {
                "signer": verification.signer,
                "signed_at": verification.signed_at,
                "signing_time_source": verification.signing_time_source,
                "level": verification.level,
                "summary": verification.summary,
            }
            if verification.summary is not None
            else None
        ),
        "checks": [
            {
                "name": line.name,
                "outcome": line.outcome,
                "label": str(line.label),
                "detail": line.detail,
            }
            for line in verification.checks
        ],
        "registered_copy_url": (
            url_for("verification.registered_file", code=facts.code, _external=True)
            if facts is not None
            else None
        ),
    }


def _api_answer(work: Callable[[Any], Verification]) -> dict[str, Any]:
    """The answer as the API's fields, or the problem raised once the logs are
    committed."""
    answer, problem = _answered(work)
    if problem is not None:
        raise problem
    assert answer is not None
    return verification_out(answer)


PROBLEMS = {
    400: "not_a_pdf, malformed_code or invalid_input",
    404: "unknown_code or share_link_unavailable",
    413: "too_large",
    422: "verification_timeout: the check passed its deadline",
    429: "rate_limited",
    503: "verification_busy",
}


@bp.post("/api/verify")
@_uploads
@bp.input(VerifyFileIn, location="form_and_files", arg_name="body")
@bp.output(VerificationOut)
@bp.doc(
    summary="Verify a transcript PDF",
    description="Validates the signature (integrity, whole-file coverage, trusted "
    "issuer, timestamp, revocation data) and looks the file up in the register. "
    "Rely on the file only when `reliable` is true. The file is not kept.",
    responses={code: PROBLEMS[code] for code in (400, 413, 422, 429, 503)},
)
def api_verify_file(body: dict[str, Any]) -> dict[str, Any]:
    data = _read_upload(body["file"])
    return _api_answer(
        lambda session: verification_service().verify_file(
            session, data, via=Via.API, now=utcnow()
        )
    )


@bp.get("/api/verify/codes/<code>")
@code_limits
@bp.output(VerificationOut)
@bp.doc(
    summary="Look up a verification code",
    description="The registered issuance of a code, with its status and the "
    "address of the registered copy to compare with. A typo is refused by the "
    "check character (`malformed_code`) before any look-up.",
    responses={code: PROBLEMS[code] for code in (400, 404, 429)},
)
def api_code(code: str) -> dict[str, Any]:
    return _api_answer(_look_up(code, Via.API))


@bp.post("/api/verify/share")
@_uploads
@bp.input(ShareIn, arg_name="body")
@bp.output(VerificationOut)
@bp.doc(
    summary="Verify the transcript a share link offers",
    description="Checks the file behind a graduate's share link like an upload; "
    "the graduate sees the check in the link's activity.",
    responses={code: PROBLEMS[code] for code in (400, 404, 429, 503)},
)
def api_share(body: dict[str, str]) -> dict[str, Any]:
    return _api_answer(
        lambda session: verification_service().verify_link(
            session, body["token"], via=Via.API, now=utcnow()
        )
    )


@bp.get("/api/verify/issuances/<int:issuance_id>/log")
@bp.output(LogEntryOut(many=True))
@bp.doc(
    summary="An issuance's access log (registrar, auditor)",
    responses=[401, 403, 404],
)
@requires_role(Role.REGISTRAR, Role.AUDITOR)
def api_access_log(issuance_id: int) -> list[dict[str, Any]]:
    from transcripts.registry import Issuance

    if db.session.get(Issuance, issuance_id) is None:
        raise NotFound()
    return [
        {"at": entry.at, "way": entry.way, "via": entry.via, "outcome": entry.outcome}
        for entry in access_log(db.session, issuance_id)
    ]


@bp.get("/api/verify/statistics")
@bp.input(DaysIn, location="query", arg_name="query")
@bp.doc(
    summary="Answers by outcome over the last days (registrar, auditor)",
    description="`unknown_code` counts the unknown codes tried.",
    responses=[400, 401, 403],
)
@requires_role(Role.REGISTRAR, Role.AUDITOR)
def api_statistics(query: dict[str, int]) -> dict[str, Any]:
    since = utcnow() - dt.timedelta(days=query["days"])
    return {"since": since.isoformat(), "outcomes": counts_since(db.session, since)}


def _secure_share_pages(response: Response) -> Response:
    """Share-link pages carry a token in their address: no referrer may take it
    elsewhere, and no other site may frame them."""
    if request.path.startswith("/share/") and request.blueprint != bp.name:
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    return response


def init_app(app: Flask) -> None:
    from transcripts import verification

    verification.init_app(app)
    app.register_blueprint(bp)
    app.after_request(_secure_share_pages)
