"""Finance's pages and API: runs, discrepancies with both sides, resolutions, CSV."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from typing import Any

from apiflask import APIBlueprint, Schema, fields
from apiflask.validators import OneOf
from flask import Response, current_app, redirect, render_template, request, url_for
from sqlalchemy import select

from campus import clock
from campus.auth import Role, current_operator, requires_role
from campus.database import db
from campus.errors import CampusError, Forbidden
from payments.money import format_yuan
from reconciliation import reports
from reconciliation.flagged import flagged_orders, recent_reviews, review
from reconciliation.matching import FINANCE_LABELS, FindingKind
from reconciliation.models import (
    Discrepancy,
    DiscrepancyStatus,
    OrderReview,
    ReconciliationRun,
)
from reconciliation.reports import COLUMNS, discrepancy_out, statement_out
from reconciliation.resolution import Decision, resolve
from reconciliation.settlement import MerchantStatement

bp = APIBlueprint(
    "reconciliation", __name__, tag="Reconciliation", template_folder="templates"
)


class DiscrepancyOut(Schema):
    id = fields.Integer()
    channel = fields.String()
    day = fields.Date()
    kind = fields.String(metadata={"enum": [kind.value for kind in FindingKind]})
    label = fields.String(metadata={"description": "the finance label, 中文 / English"})
    status = fields.String(
        metadata={"enum": [status.value for status in DiscrepancyStatus]}
    )
    out_trade_no = fields.String(allow_none=True)
    transaction_id = fields.String(allow_none=True)
    out_refund_no = fields.String(allow_none=True)
    our_state = fields.String(allow_none=True)
    channel_state = fields.String(allow_none=True)
    our_amount_fen = fields.Integer(allow_none=True)
    channel_amount_fen = fields.Integer(allow_none=True)
    note = fields.String()
    resolution = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    resolved_by = fields.String(allow_none=True)


class RunOut(Schema):
    channel = fields.String()
    day = fields.Date()
    state = fields.String()
    attempts = fields.Integer()
    lines = fields.Integer()
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    error = fields.String(allow_none=True)


class ResolveIn(Schema):
    decision = fields.String(required=True, validate=OneOf([d.value for d in Decision]))
    reason = fields.String(required=True)


class DiscrepancyQuery(Schema):
    day = fields.Date(load_default=None)
    status = fields.String(load_default="open")


def run_out(run: ReconciliationRun) -> dict[str, Any]:
    return {
        "channel": run.channel,
        "day": run.day,
        "state": run.state.value,
        "attempts": run.attempts,
        "lines": run.lines,
        "counts": json.loads(run.counts) if run.counts else {},
        "error": run.error,
    }


def _discrepancies(day: dt.date | None, status: str) -> list[Discrepancy]:
    query = select(Discrepancy).order_by(Discrepancy.day.desc(), Discrepancy.id)
    if day is not None:
        query = query.where(Discrepancy.day == day)
    if status != "all":
        query = query.where(Discrepancy.status == status)
    return list(db.session.scalars(query.limit(2000)))


@bp.get("/api/reconciliation/runs")
@bp.output(RunOut(many=True))
@bp.doc(summary="Reconciliation runs, newest first", responses=[401, 403])
@requires_role(Role.FINANCE, Role.AUDITOR)
def runs_api() -> list[dict[str, Any]]:
    runs = db.session.scalars(
        select(ReconciliationRun).order_by(ReconciliationRun.day.desc()).limit(200)
    )
    return [run_out(run) for run in runs]


class FlaggedOrderOut(Schema):
    kind = fields.String(metadata={"enum": ["top_up", "pos_payment"]})
    out_trade_no = fields.String()
    channel = fields.String(allow_none=True)
    state = fields.String(metadata={"description": "the order's own state"})
    amount_fen = fields.Integer()
    transaction_id = fields.String(allow_none=True)
    reason = fields.String(metadata={"description": "why payments flagged it"})
    merchant = fields.String(allow_none=True)
    created_at = fields.DateTime()


@bp.get("/api/reconciliation/flagged-orders")
@bp.output(FlaggedOrderOut(many=True))
@bp.doc(
    summary="Orders payments flagged for review (e.g. paid after they closed)",
    responses=[401, 403],
)
@requires_role(Role.FINANCE, Role.AUDITOR)
def flagged_orders_api() -> list[dict[str, Any]]:
    return [dataclasses.asdict(order) for order in flagged_orders(db.session())]


class ReviewIn(Schema):
    note = fields.String(
        required=True, metadata={"description": "what was found (4 characters or more)"}
    )


class ReviewOut(Schema):
    kind = fields.String()
    out_trade_no = fields.String()
    flag_reason = fields.String(metadata={"description": "the flag as reviewed"})
    note = fields.String()
    reviewed_by = fields.String()
    reviewed_at = fields.DateTime()


def review_out(item: OrderReview) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "out_trade_no": item.out_trade_no,
        "flag_reason": item.flag_reason,
        "note": item.note,
        "reviewed_by": item.reviewed_by,
        "reviewed_at": item.reviewed_at,
    }


@bp.post("/api/reconciliation/flagged-orders/<kind>/<out_trade_no>/review")
@bp.input(ReviewIn, arg_name="review_in")
@bp.output(ReviewOut)
@bp.doc(
    summary="Mark a flagged order reviewed, saying what was found",
    description="Takes the order off the list of flagged orders until payments "
    "flags it for another reason. No money moves; the review is kept.",
    responses=[400, 401, 403, 404, 409],
)
@requires_role(Role.FINANCE)
def review_api(kind: str, out_trade_no: str, review_in: dict[str, str]) -> Any:
    operator = current_operator()
    assert operator is not None
    with db.transaction() as session:
        item = review(
            session,
            kind,
            out_trade_no,
            note=review_in["note"],
            operator=f"operator:{operator.username}",
        )
        answer = review_out(item)
    return answer


@bp.get("/api/reconciliation/order-reviews")
@bp.output(ReviewOut(many=True))
@bp.doc(summary="The latest reviews of flagged orders, newest first")
@requires_role(Role.FINANCE, Role.AUDITOR)
def reviews_api() -> list[dict[str, Any]]:
    return [review_out(item) for item in recent_reviews(db.session())]


@bp.get("/api/reconciliation/discrepancies")
@bp.input(DiscrepancyQuery, location="query", arg_name="query")
@bp.output(DiscrepancyOut(many=True))
@bp.doc(
    summary="Discrepancies (open by default; status=all for every one)",
    responses=[401, 403],
)
@requires_role(Role.FINANCE, Role.AUDITOR)
def discrepancies_api(query: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        discrepancy_out(item) for item in _discrepancies(query["day"], query["status"])
    ]


@bp.post("/api/reconciliation/discrepancies/<int:discrepancy_id>/resolve")
@bp.input(ResolveIn, arg_name="resolution")
@bp.output(DiscrepancyOut)
@bp.doc(
    summary="Resolve by trusting the channel or our records, with a reason",
    responses=[400, 401, 403, 404, 409],
)
@requires_role(Role.FINANCE)
def resolve_api(discrepancy_id: int, resolution: dict[str, str]) -> dict[str, Any]:
    operator = current_operator()
    assert operator is not None
    with db.transaction() as session:
        item = resolve(
            session,
            discrepancy_id,
            Decision(resolution["decision"]),
            reason=resolution["reason"],
            operator=f"operator:{operator.username}",
        )
        answer = discrepancy_out(item)
    return answer


@bp.get("/reconciliation/discrepancies.csv")
@bp.doc(
    summary="Discrepancies as CSV (UTF-8 with BOM, opens in Excel)",
    responses=[401, 403],
)
@requires_role(Role.FINANCE, Role.AUDITOR)
def discrepancies_csv() -> Response:
    day = request.args.get("day")
    items = _discrepancies(
        dt.date.fromisoformat(day) if day else None, request.args.get("status", "all")
    )
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for item in items:
        row = discrepancy_out(item)
        writer.writerow(
            [row[column] if row[column] is not None else "" for column in COLUMNS]
        )
    name = f"discrepancies-{day or 'all'}.csv"
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename={name}"},
    )


@bp.route("/reconciliation", methods=["GET", "POST"])
@bp.doc(hide=True)
@requires_role(Role.FINANCE, Role.AUDITOR)
def finance_page() -> Any:
    # A refusal is shown beside the form that was sent.
    error = review_error = None
    if request.method == "POST":
        operator = current_operator()
        assert operator is not None
        # Auditors read this page; only finance changes anything through it.
        if not operator.has_role(Role.FINANCE):
            raise Forbidden()
        try:
            with db.transaction() as session:
                if request.form.get("action") == "review":
                    review(
                        session,
                        request.form.get("kind", ""),
                        request.form.get("out_trade_no", ""),
                        note=request.form.get("note", ""),
                        operator=f"operator:{operator.username}",
                    )
                else:
                    resolve(
                        session,
                        int(request.form["id"]),
                        Decision(request.form["decision"]),
                        reason=request.form.get("reason", ""),
                        operator=f"operator:{operator.username}",
                    )
        except CampusError as refused:
            if request.form.get("action") == "review":
                review_error = str(refused.detail)
            else:
                error = str(refused.detail)
        else:
            return redirect(url_for(".finance_page"))
    runs = list(
        db.session.scalars(
            select(ReconciliationRun).order_by(ReconciliationRun.day.desc()).limit(60)
        )
    )
    return render_template(
        "reconciliation/finance.html",
        runs=[run_out(run) for run in runs],
        open_items=[discrepancy_out(i) for i in _discrepancies(None, "open")],
        held_items=[discrepancy_out(i) for i in _discrepancies(None, "held")],
        flagged=flagged_orders(db.session()),
        reviews=recent_reviews(db.session(), limit=20),
        chart=_chart(),
        format_yuan=format_yuan,
        labels=FINANCE_LABELS,
        can_resolve=current_operator().has_role(Role.FINANCE),  # type: ignore[union-attr]
        error=error,
        review_error=review_error,
    )


class StatementOut(Schema):
    merchant = fields.String()
    day = fields.Date()
    gross_by_channel = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "fen per channel"},
    )
    gross_fen = fields.Integer()
    refunds_fen = fields.Integer()
    fees_fen = fields.Integer()
    net_fen = fields.Integer()
    paid_fen = fields.Integer(
        metadata={
            "description": "what the payout moved: the net, less what the merchant "
            "owed from refunds of takings already paid out (never negative)"
        }
    )
    entry_id = fields.Integer(
        allow_none=True, metadata={"description": "the payout's journal entry"}
    )


class StatementQuery(Schema):
    merchant = fields.String(load_default=None)
    day = fields.Date(load_default=None)


def _statements(merchant: str | None, day: dt.date | None) -> list[MerchantStatement]:
    query = select(MerchantStatement).order_by(
        MerchantStatement.day.desc(), MerchantStatement.merchant
    )
    if merchant:
        query = query.where(MerchantStatement.merchant == merchant)
    if day:
        query = query.where(MerchantStatement.day == day)
    return list(db.session.scalars(query.limit(1000)))


@bp.get("/api/reconciliation/statements")
@bp.input(StatementQuery, location="query", arg_name="query")
@bp.output(StatementOut(many=True))
@bp.doc(summary="Merchant settlement statements", responses=[401, 403])
@requires_role(Role.FINANCE, Role.AUDITOR)
def statements_api(query: dict[str, Any]) -> list[dict[str, Any]]:
    return [statement_out(row) for row in _statements(query["merchant"], query["day"])]


@bp.get("/reconciliation/statements.csv")
@bp.input(StatementQuery, location="query", arg_name="query")
@bp.doc(summary="Merchant statements as CSV", responses=[401, 403])
@requires_role(Role.FINANCE, Role.AUDITOR)
def statements_csv(query: dict[str, Any]) -> Response:
    report = _statement_report(query)
    name = f"statements-{query['merchant'] or 'all'}.csv"
    return _download(reports.statements_csv(report), "text/csv", name)


@bp.get("/reconciliation/statements.pdf")
@bp.input(StatementQuery, location="query", arg_name="query")
@bp.doc(
    summary="Merchant statements as PDF (a merchant's, or every one's)",
    responses=[401, 403],
)
@requires_role(Role.FINANCE, Role.AUDITOR)
def statements_pdf(query: dict[str, Any]) -> Response:
    report = _statement_report(query)
    name = f"statements-{query['merchant'] or 'all'}.pdf"
    return _download(reports.statements_pdf(report), "application/pdf", name)


def _statement_report(query: dict[str, Any]) -> reports.StatementReport:
    rows = _statements(query["merchant"], query["day"])
    return reports.statement_report(db.session(), query["merchant"], rows)


class SummaryQuery(Schema):
    day = fields.Date(required=True)


@bp.get("/reconciliation/summary.csv")
@bp.input(SummaryQuery, location="query", arg_name="query")
@bp.doc(
    summary="A day's run summary as CSV: counts by kind, then open discrepancies",
    responses=[401, 403],
)
@requires_role(Role.FINANCE, Role.AUDITOR)
def summary_csv(query: dict[str, Any]) -> Response:
    summary = reports.day_summary(db.session(), query["day"])
    name = f"reconciliation-{query['day']}.csv"
    return _download(reports.summary_csv(summary), "text/csv", name)


@bp.get("/reconciliation/summary.pdf")
@bp.input(SummaryQuery, location="query", arg_name="query")
@bp.doc(summary="A day's run summary as PDF", responses=[401, 403])
@requires_role(Role.FINANCE, Role.AUDITOR)
def summary_pdf(query: dict[str, Any]) -> Response:
    summary = reports.day_summary(db.session(), query["day"])
    name = f"reconciliation-{query['day']}.pdf"
    return _download(reports.summary_pdf(summary), "application/pdf", name)


def _download(body: str | bytes, mimetype: str, name: str) -> Response:
    return Response(
        body,
        mimetype=mimetype,
        headers={"Content-Disposition": f"attachment; filename={name}"},
    )


@bp.get("/reconciliation/merchants/<code>")
@bp.doc(hide=True)
@requires_role(Role.FINANCE, Role.AUDITOR)
def merchant_page(code: str) -> str:
    return render_template(
        "reconciliation/merchant.html",
        merchant=code,
        statements=[statement_out(row) for row in _statements(code, None)],
        format_yuan=format_yuan,
    )


def _chart() -> list[dict[str, Any]]:
    """The last 30 calendar days up to yesterday, the latest day a nightly run
    can have reconciled, as bar heights in percent."""
    settings = current_app.extensions["campus.settings"]
    yesterday = clock.now().astimezone(settings.zone).date() - dt.timedelta(days=1)
    days = reports.chart(db.session(), yesterday)
    return [
        {
            "day": day.day,
            "ran": day.ran,
            "matched": day.matched,
            "still_open": day.still_open,
            "matched_height": round(100 * matched, 1),
            "open_height": round(100 * still_open, 1),
        }
        for day, (matched, still_open) in zip(
            days, reports.bar_heights(days), strict=True
        )
    ]
