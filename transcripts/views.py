"""Pages and API of transcripts: the graduate's, the registrar's, share links.

Graduates (signed in through CAS or the development sign-in): ``/me/transcripts``
lists their issuances and share links with each link's activity, downloads the
current transcript, issues one on demand (rate-limited per student by
Flask-Limiter) and makes or revokes share links.

Registrar (``Role.REGISTRAR``): ``/registrar/transcripts`` finds a student's
issuances, revokes or supersedes them with a reason, and starts cohort batches
whose progress the page follows; the JSON API under ``/api/transcripts`` does the
same for scripts, plus record imports.

A visitor with a share link: ``/share/<token>`` shows the issuance's status and
offers the file while the link and the issuance are valid.

Known gap: the web-started batch runs in a thread of the web process (with its
own process pool); a restart of the web process interrupts it, and the page or
``flask transcripts issue-cohort --batch N`` resumes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from apiflask import APIBlueprint, Schema, fields
from flask import (
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_babel import gettext
from flask_limiter import Limiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response

from campus.auth import (
    Role,
    current_operator,
    current_student,
    requires_role,
    requires_student,
)
from campus.database import db, utcnow
from campus.errors import CampusError, NotFound
from transcripts import batches, registry, sharing
from transcripts.importing import ColumnMapping, import_file
from transcripts.records import record_by_number, record_for_person

logger = logging.getLogger(__name__)

bp = APIBlueprint(
    "transcripts", __name__, tag="Transcripts", template_folder="templates"
)


def _student_key() -> str:
    return f"student:{session.get('person_id', 'anonymous')}"


limiter = Limiter(key_func=_student_key)

# The blueprints whose views carry limits; nothing else is limited.
_LIMITED_BLUEPRINTS = frozenset({"transcripts", "verification"})


@limiter.request_filter
def _not_limited_here() -> bool:
    # The limiter sits in front of every request of the app; a canteen terminal's
    # payment at lunch should not pay for looking up limits it does not have.
    return request.blueprint not in _LIMITED_BLUEPRINTS


"""Its counters live where ``CAMPUS_RATE_LIMIT_STORAGE`` says: the memory of this
process by default (right for one web process), Redis in production, where
several processes must share them."""


def _now() -> dt.datetime:
    return utcnow()


def _operator_actor() -> str:
    operator = current_operator()
    return f"operator:{operator.username}" if operator else "operator:?"


def _pdf(data: bytes, name: str, inline: bool = False) -> Response:
    import io

    response = send_file(
        io.BytesIO(data),
        mimetype="application/pdf",
        as_attachment=not inline,
        download_name=name,
        max_age=0,
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response


# -- the graduate's pages --------------------------------------------------------------


def _my_record() -> Any:
    person = current_student()
    assert person is not None
    return record_for_person(db.session, person)


def _my_issuance(issuance_id: int) -> registry.Issuance:
    record = _my_record()
    issuance = db.session.get(registry.Issuance, issuance_id)
    if record is None or issuance is None or issuance.student_id != record.id:
        raise NotFound()
    return issuance


@bp.get("/me/transcripts")
@bp.doc(hide=True)
@requires_student
def my_transcripts() -> str:
    record = _my_record()
    now = _now()
    issuances = registry.issuances_of(db.session, record) if record else []
    current = registry.current_issuance(db.session, record, now) if record else None
    links = sharing.links_of(db.session, [i.id for i in issuances])
    activity = {link.id: sharing.events_of(db.session, link) for link in links}
    return render_template(
        "transcripts/mine.html",
        record=record,
        issuances=issuances,
        current=current,
        links=links,
        activity=activity,
        now=now,
        new_link=session.pop("new_share_link", None),
        max_days=registry.transcript_service().config.share_link_max_days,
    )


@bp.post("/me/transcripts/issue")
@bp.doc(hide=True)
@requires_student
@limiter.limit(
    lambda: registry.transcript_service().config.on_demand_limit,
    key_func=_student_key,
)
def issue_mine() -> Response:
    record = _my_record()
    if record is None:
        raise registry.NoStudentRecord()
    person = current_student()
    assert person is not None
    with db.transaction() as db_session:
        registry.issue(db_session, record, actor=f"student:{person.number}")
    flash(gettext("Your transcript has been issued."))
    return redirect(url_for("transcripts.my_transcripts"))


@bp.get("/me/transcripts/current.pdf")
@bp.doc(hide=True)
@requires_student
def download_current() -> Response:
    record = _my_record()
    current = registry.current_issuance(db.session, record, _now()) if record else None
    if current is None:
        return redirect(url_for("transcripts.my_transcripts"))
    return _pdf(registry.stored_file(current), f"transcript-{current.code}.pdf")


@bp.get("/me/transcripts/<int:issuance_id>.pdf")
@bp.doc(hide=True)
@requires_student
def download_mine(issuance_id: int) -> Response:
    issuance = _my_issuance(issuance_id)
    return _pdf(registry.stored_file(issuance), f"transcript-{issuance.code}.pdf")


@bp.post("/me/transcripts/<int:issuance_id>/links")
@bp.doc(hide=True)
@requires_student
def create_link(issuance_id: int) -> Response:
    issuance = _my_issuance(issuance_id)
    now = _now()
    if issuance.effective_status(now) != "valid":
        flash(gettext("Only a valid transcript can be shared."))
        return redirect(url_for("transcripts.my_transcripts"))
    try:
        days = int(request.form.get("days", "30"))
    except ValueError:
        days = 0
    try:
        with db.transaction() as db_session:
            _, token = sharing.create_link(
                db_session,
                issuance,
                days=days,
                recipient=request.form.get("recipient"),
                now=now,
                max_days=registry.transcript_service().config.share_link_max_days,
            )
    except sharing.BadExpiry as error:
        flash(str(error.detail))
        return redirect(url_for("transcripts.my_transcripts"))
    session["new_share_link"] = url_for(
        "transcripts.shared", token=token, _external=True
    )
    return redirect(url_for("transcripts.my_transcripts") + "#links")


@bp.post("/me/links/<int:link_id>/revoke")
@bp.doc(hide=True)
@requires_student
def revoke_link(link_id: int) -> Response:
    link = db.session.get(sharing.ShareLink, link_id)
    if link is None:
        raise NotFound()
    _my_issuance(link.issuance_id)
    with db.transaction() as db_session:
        sharing.revoke_link(db_session, link, _now())
    flash(gettext("The link no longer works."))
    return redirect(url_for("transcripts.my_transcripts") + "#links")


# -- share links, for the employer -----------------------------------------------------


def _use_link(token: str, kind: sharing.LinkEventKind) -> Any:
    """The link, or the refusal; either way the use is committed to its log."""
    with db.transaction() as db_session:
        try:
            return sharing.open_link(db_session, token, _now(), kind)
        except sharing.LinkUnavailable as refusal:
            return refusal


@bp.get("/share/<token>")
@bp.doc(hide=True)
def shared(token: str) -> Any:
    link = _use_link(token, sharing.LinkEventKind.OPENED)
    if isinstance(link, sharing.LinkUnavailable):
        return render_template("transcripts/shared.html", refusal=link), 404
    return render_template(
        "transcripts/shared.html",
        link=link,
        issuance=link.issuance,
        token=token,
        refusal=None,
    )


@bp.get("/share/<token>/transcript.pdf")
@bp.doc(hide=True)
def shared_file(token: str) -> Any:
    link = _use_link(token, sharing.LinkEventKind.DOWNLOADED)
    if isinstance(link, sharing.LinkUnavailable):
        return render_template("transcripts/shared.html", refusal=link), 404
    return _pdf(
        registry.stored_file(link.issuance), f"transcript-{link.issuance.code}.pdf"
    )


# -- the registrar's pages -------------------------------------------------------------


_running: dict[int, threading.Thread] = {}


def start_batch_thread(
    app: Flask, batch_id: int, workers: int | None
) -> threading.Thread:
    """Run a batch in the background of this process; the page follows it."""

    def run() -> None:
        with app.app_context():
            try:
                batches.run_batch(app, batch_id, workers=workers)
            except Exception:  # noqa: BLE001 - logged; the page shows what is left
                logger.exception("batch_thread_failed", extra={"batch": batch_id})
            finally:
                db.session.remove()

    thread = threading.Thread(target=run, name=f"batch-{batch_id}", daemon=True)
    _running[batch_id] = thread
    thread.start()
    return thread


def start_or_resume(college: str | None, year: int | None) -> int:
    """The unfinished batch of this cohort, or a new one, running in the
    background (once); its id."""
    with db.transaction() as db_session:
        batch = batches.unfinished_batch(
            db_session, college=college, graduation_year=year
        ) or batches.create_batch(
            db_session, college=college, graduation_year=year, actor=_operator_actor()
        )
        batch_id = batch.id
    thread = _running.get(batch_id)
    if thread is None or not thread.is_alive():
        start_batch_thread(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            batch_id,
            None,
        )
    return batch_id


@bp.get("/registrar/transcripts")
@bp.doc(hide=True)
@requires_role(Role.REGISTRAR)
def registrar_home() -> str:
    number = request.args.get("number", "").strip()
    record = record_by_number(db.session, number) if number else None
    recent = db.session.query(batches.Batch).order_by(batches.Batch.id.desc()).limit(10)
    return render_template(
        "transcripts/registrar.html",
        number=number,
        record=record,
        issuances=registry.issuances_of(db.session, record) if record else [],
        batches=[(b, batches.progress(db.session, b.id)) for b in recent],
        now=_now(),
    )


@bp.post("/registrar/transcripts/issuances/<int:issuance_id>/<action>")
@bp.doc(hide=True)
@requires_role(Role.REGISTRAR)
def registrar_change(issuance_id: int, action: str) -> Response:
    reason = request.form.get("reason", "")
    number = request.form.get("number", "")
    try:
        with db.transaction() as db_session:
            if action == "revoke":
                registry.revoke(
                    db_session, issuance_id, reason=reason, actor=_operator_actor()
                )
            elif action == "supersede":
                registry.supersede(
                    db_session, issuance_id, reason=reason, actor=_operator_actor()
                )
            else:
                abort(404)
    except CampusError as error:
        flash(str(error.detail))
    return redirect(url_for("transcripts.registrar_home", number=number))


@bp.get("/registrar/transcripts/issuances/<int:issuance_id>.pdf")
@bp.doc(hide=True)
@requires_role(Role.REGISTRAR, Role.AUDITOR)
def registrar_file(issuance_id: int) -> Response:
    issuance = db.session.get(registry.Issuance, issuance_id)
    if issuance is None:
        raise NotFound()
    return _pdf(registry.stored_file(issuance), f"transcript-{issuance.code}.pdf", True)


@bp.post("/registrar/transcripts/batches")
@bp.doc(hide=True)
@requires_role(Role.REGISTRAR)
def registrar_batch() -> Response:
    college = request.form.get("college", "").strip() or None
    year_text = request.form.get("year", "").strip()
    year = int(year_text) if year_text.isdigit() else None
    batch_id = start_or_resume(college, year)
    return redirect(url_for("transcripts.registrar_batch_page", batch_id=batch_id))


@bp.get("/registrar/transcripts/batches/<int:batch_id>")
@bp.doc(hide=True)
@requires_role(Role.REGISTRAR, Role.AUDITOR)
def registrar_batch_page(batch_id: int) -> str:
    batch = db.session.get(batches.Batch, batch_id)
    if batch is None:
        raise NotFound()
    return render_template(
        "transcripts/batch.html",
        batch=batch,
        progress=batches.progress(db.session, batch_id),
        failures=batches.failures(db.session, batch_id),
    )


# -- JSON API --------------------------------------------------------------------------


class ReasonIn(Schema):
    reason = fields.String(required=True, metadata={"description": "Why; audited."})


class IssuanceOut(Schema):
    id = fields.Integer()
    student_number = fields.String()
    document_version = fields.Integer()
    code = fields.String()
    sha256 = fields.String()
    issued_at = fields.DateTime()
    valid_until = fields.DateTime()
    status = fields.String(
        metadata={"description": "valid, expired, revoked or superseded"}
    )
    status_reason = fields.String(allow_none=True)
    superseded_by = fields.Integer(allow_none=True)
    signature_level = fields.String()


def issuance_out(issuance: registry.Issuance) -> dict[str, Any]:
    return {
        "id": issuance.id,
        "student_number": issuance.student.person.number,
        "document_version": issuance.document_version,
        "code": issuance.code,
        "sha256": issuance.sha256,
        "issued_at": issuance.issued_at,
        "valid_until": issuance.valid_until,
        "status": issuance.effective_status(_now()),
        "status_reason": issuance.status_reason,
        "superseded_by": issuance.superseded_by_id,
        "signature_level": issuance.signature_level,
    }


class ProgressOut(Schema):
    batch_id = fields.Integer()
    total = fields.Integer()
    issued = fields.Integer()
    failed = fields.Integer()
    pending = fields.Integer()
    finished = fields.Boolean()
    failures = fields.List(fields.Dict())


class BatchIn(Schema):
    college = fields.String(load_default=None)
    graduation_year = fields.Integer(load_default=None)


class ImportIn(Schema):
    kind = fields.String(required=True, metadata={"description": "students or grades"})
    file = fields.File(required=True)
    mapping = fields.String(
        load_default="",
        metadata={"description": 'JSON object or "field=Header,..." pairs'},
    )


@bp.post("/api/transcripts/issuances/<int:issuance_id>/revoke")
@bp.input(ReasonIn, arg_name="body")
@bp.output(IssuanceOut)
@bp.doc(summary="Revoke an issuance (registrar)", responses=[400, 401, 403, 404, 409])
@requires_role(Role.REGISTRAR)
def api_revoke(issuance_id: int, body: dict[str, str]) -> dict[str, Any]:
    with db.transaction() as db_session:
        issuance = registry.revoke(
            db_session, issuance_id, reason=body["reason"], actor=_operator_actor()
        )
        return issuance_out(issuance)


@bp.post("/api/transcripts/issuances/<int:issuance_id>/supersede")
@bp.input(ReasonIn, arg_name="body")
@bp.output(IssuanceOut, status_code=201)
@bp.doc(
    summary="Issue anew from current records and supersede (registrar)",
    responses=[400, 401, 403, 404, 409, 503],
)
@requires_role(Role.REGISTRAR)
def api_supersede(issuance_id: int, body: dict[str, str]) -> dict[str, Any]:
    with db.transaction() as db_session:
        new = registry.supersede(
            db_session, issuance_id, reason=body["reason"], actor=_operator_actor()
        )
        return issuance_out(new)


@bp.get("/api/transcripts/students/<number>/issuances")
@bp.output(IssuanceOut(many=True))
@bp.doc(summary="A student's issuances (registrar, auditor)", responses=[404])
@requires_role(Role.REGISTRAR, Role.AUDITOR)
def api_issuances(number: str) -> list[dict[str, Any]]:
    record = record_by_number(db.session, number)
    if record is None:
        raise registry.NoStudentRecord()
    return [issuance_out(i) for i in registry.issuances_of(db.session, record)]


@bp.post("/api/transcripts/students/<number>/issuances")
@bp.output(IssuanceOut, status_code=201)
@bp.doc(summary="Issue one student's transcript now (registrar)", responses=[404, 503])
@requires_role(Role.REGISTRAR)
def api_issue(number: str) -> dict[str, Any]:
    record = record_by_number(db.session, number)
    if record is None:
        raise registry.NoStudentRecord()
    with db.transaction() as db_session:
        return issuance_out(registry.issue(db_session, record, actor=_operator_actor()))


@bp.post("/api/transcripts/batches")
@bp.input(BatchIn, arg_name="body")
@bp.output(ProgressOut, status_code=202)
@bp.doc(summary="Start (or resume) a cohort batch (registrar)")
@requires_role(Role.REGISTRAR)
def api_batch(body: dict[str, Any]) -> dict[str, Any]:
    batch_id = start_or_resume(body["college"], body["graduation_year"])
    return api_batch_progress(batch_id)


@bp.get("/api/transcripts/batches/<int:batch_id>")
@bp.output(ProgressOut)
@bp.doc(summary="A batch's progress and failures", responses=[404])
@requires_role(Role.REGISTRAR, Role.AUDITOR)
def api_batch_progress(batch_id: int) -> dict[str, Any]:
    if db.session.get(batches.Batch, batch_id) is None:
        raise NotFound()
    state = batches.progress(db.session, batch_id).as_dict()
    state["failures"] = [
        {"number": number, "error": error}
        for number, error in batches.failures(db.session, batch_id)
    ]
    db.session.commit()
    return state


@bp.post("/api/transcripts/imports")
@bp.input(ImportIn, location="form_and_files", arg_name="body")
@bp.doc(
    summary="Import students or grades from CSV or Excel (registrar)",
    description="All rows or none: a file with any bad row imports nothing and "
    "the answer lists every problem with its line number.",
    responses=[400, 401, 403],
)
@requires_role(Role.REGISTRAR)
def api_import(body: dict[str, Any]) -> dict[str, Any]:
    upload = body["file"]
    with db.transaction() as db_session:
        report = import_file(
            db_session,
            body["kind"],
            upload.read(),
            upload.filename or "upload.csv",
            ColumnMapping.parse(body["kind"], body["mapping"]),
            actor=_operator_actor(),
        )
    return report.as_dict()


@bp.errorhandler(TooManyRequests)
def _too_many(error: TooManyRequests) -> Any:
    if request.path.startswith("/me/"):
        flash(
            gettext(
                "Too many transcripts issued in a short time; please try again later."
            )
        )
        return redirect(url_for("transcripts.my_transcripts"))
    from campus.errors import problem_response

    return problem_response(
        {
            "type": "https://campus-card.invalid/problems/rate_limited",
            "title": "Too many requests",
            "status": 429,
            "code": "rate_limited",
            "detail": str(error.description),
        }
    )


def init_app(app: Flask) -> None:
    from transcripts import verification_views

    storage = app.extensions["campus.settings"].rate_limit_storage_uri
    app.config["RATELIMIT_STORAGE_URI"] = storage
    limiter.init_app(app)
    if storage.startswith("memory"):
        # Each app starts with empty counters (tests make many apps in one
        # process); a shared store keeps the counts of the other processes.
        limiter.reset()
    app.register_blueprint(bp)
    verification_views.init_app(app)
