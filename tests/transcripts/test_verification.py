"""Verification by file, code, QR address and share link, on the pages and in
the API: each case answered with its own outcome, status and checks."""

from __future__ import annotations

import datetime as dt
import io
import logging

import pytest
from sqlalchemy import event

from campus.auth import Role
from campus.database import db, utcnow
from signing.validator import Check, ValidationReport
from signing.validator import Outcome as CheckOutcome
from transcripts import codes, registry, sharing, verification
from transcripts.sharing import LinkEventKind

from .conftest import NOW, pdf_form


def upload_page(client, pdf: bytes, lang: str = "zh"):
    return client.post(f"/verify?lang={lang}", **pdf_form(pdf))


def upload_api(client, pdf: bytes):
    response = client.post("/api/verify?lang=en", **pdf_form(pdf))
    return response, response.get_json()


def checks_of(body: dict) -> dict[str, str]:
    return {line["name"]: line["outcome"] for line in body["checks"]}


def page_outcome(response) -> str:
    text = response.get_data(as_text=True)
    marker = 'data-outcome="'
    start = text.index(marker, text.index('id="verdict"')) + len(marker)
    return text[start : text.index('"', start)]


def test_a_genuine_transcript_is_authentic_and_the_look_up_logged(
    session, client, register_issued, verification_files
):
    issuance = register_issued()

    page = upload_page(client, verification_files.genuine)
    response, body = upload_api(client, verification_files.genuine)

    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert page_outcome(page) == "authentic"
    assert "真实成绩单" in text and "欧阳娜娜" in text and "示范大学" in text
    assert "有效" in text
    assert response.status_code == 200
    assert body["outcome"] == "authentic" and body["reliable"] is True
    assert body["status"] == "valid" and body["matched"] == "file"
    assert body["issuance"]["name_zh"] == "欧阳娜娜"
    assert body["issuance"]["code"] == issuance.code
    assert body["signature"]["level"] == "B-LTA"
    assert set(checks_of(body).values()) == {"passed"}
    log = verification.access_log(session, issuance.id)
    assert [(entry.way, entry.via) for entry in log] == [
        (verification.Way.FILE, verification.Via.API),
        (verification.Way.FILE, verification.Via.PAGE),
    ]


def test_answers_carry_the_security_headers(client, verification_files):
    for response in (
        client.get("/verify"),
        upload_page(client, verification_files.unsigned),
        client.get("/api/verify/codes/0000-0000-0000-0000-0000"),
    ):
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
    page_policy = client.get("/verify").headers["Content-Security-Policy"]
    assert "default-src 'none'" in page_policy and "'unsafe-inline'" not in page_policy


def test_one_changed_byte_is_refused_saying_the_signed_content_changed(
    client, register_issued, verification_files
):
    register_issued()

    page = upload_page(client, verification_files.one_byte_changed, lang="en")
    response, body = upload_api(client, verification_files.one_byte_changed)

    assert page_outcome(page) == "tampered"
    assert "the file was changed after signing" in page.get_data(as_text=True)
    assert response.status_code == 200
    assert body["outcome"] == "tampered" and body["reliable"] is False
    assert checks_of(body)["integrity"] == "failed"
    assert body["issuance"] is None and body["status"] is None


def test_a_page_added_by_an_incremental_update_is_refused(
    client, register_issued, verification_files
):
    issuance = register_issued()

    page = upload_page(client, verification_files.page_added)
    response, body = upload_api(client, verification_files.page_added)

    assert page_outcome(page) == "changed_after_signing"
    assert "签名之后被添加了内容" in page.get_data(as_text=True)
    assert body["outcome"] == "changed_after_signing" and body["reliable"] is False
    assert checks_of(body)["integrity"] == "passed"
    assert checks_of(body)["coverage"] == "failed"
    # The signed revision it starts with is the registered transcript: the
    # answer points the employer at the copy to compare with.
    assert body["matched"] == "signed_revision"
    assert body["issuance"]["code"] == issuance.code


def test_a_revoked_transcript_is_authentic_but_says_revoked_and_why(
    session, client, register_issued, verification_files
):
    issuance = register_issued()
    registry.revoke(
        session, issuance.id, reason="成绩更正 grade correction", actor="operator:r"
    )
    session.commit()

    page = upload_page(client, verification_files.genuine)
    response, body = upload_api(client, verification_files.genuine)

    text = page.get_data(as_text=True)
    assert page_outcome(page) == "authentic"
    assert "已撤销" in text and "成绩更正 grade correction" in text
    assert body["outcome"] == "authentic" and body["status"] == "revoked"
    assert body["reliable"] is False
    assert "revoked this transcript" in body["status_message"]
    assert body["issuance"]["status_reason"] == "成绩更正 grade correction"


def test_a_superseded_transcript_is_authentic_but_says_superseded(
    session, client, register_issued, verification_files
):
    issuance = register_issued()
    registry.supersede(
        session, issuance.id, reason="grade correction", actor="operator:r", now=NOW
    )
    session.commit()

    page = upload_page(client, verification_files.genuine)
    response, body = upload_api(client, verification_files.genuine)

    assert page_outcome(page) == "authentic"
    assert "被更新的成绩单取代" in page.get_data(as_text=True)
    assert body["outcome"] == "authentic" and body["status"] == "superseded"
    assert body["reliable"] is False
    assert "ask the graduate for the current transcript" in body["status_message"]


def test_an_expired_transcript_is_authentic_but_says_expired(
    client, register_issued, verification_files
):
    register_issued(valid_until=utcnow() - dt.timedelta(days=1))

    page = upload_page(client, verification_files.genuine)
    response, body = upload_api(client, verification_files.genuine)

    assert page_outcome(page) == "authentic"
    assert "已过有效期" in page.get_data(as_text=True)
    assert body["outcome"] == "authentic" and body["status"] == "expired"
    assert body["reliable"] is False


def test_an_intact_university_signature_not_in_the_registry_is_not_registered(
    client, verification_files
):
    response, body = upload_api(client, verification_files.genuine)

    assert body["outcome"] == "not_registered" and body["reliable"] is False
    assert checks_of(body)["issuer"] == "passed"
    assert checks_of(body)["registry"] == "failed"


def test_a_scanned_copy_without_signature_is_told_to_use_the_code(
    client, verification_files
):
    page = upload_page(client, verification_files.unsigned)
    response, body = upload_api(client, verification_files.unsigned)

    assert page_outcome(page) == "unsigned"
    assert "验证码" in page.get_data(as_text=True)
    assert body["outcome"] == "unsigned" and body["checks"] == []


def test_a_file_signed_by_another_ca_is_signed_by_someone_else(
    client, verification_files
):
    page = upload_page(client, verification_files.signed_by_a_stranger)
    response, body = upload_api(client, verification_files.signed_by_a_stranger)

    assert page_outcome(page) == "untrusted_signer"
    assert body["outcome"] == "untrusted_signer"
    assert checks_of(body)["integrity"] == "passed"
    assert checks_of(body)["issuer"] == "failed"


def resaved(pdf: bytes, *, whole: bool) -> bytes:
    """``pdf`` saved again by another program: pypdf's ``PdfWriter`` writes a
    new file with no incremental structure, the whole document cloned or only
    its pages copied (dropping the form that held the signature)."""
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(io.BytesIO(pdf))
    if whole:
        writer = PdfWriter(clone_from=reader)
    else:
        writer = PdfWriter()
        for page in reader.pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_file_rewritten_whole_by_another_program_no_longer_fits_its_signature(
    client, register_issued, verification_files
):
    register_issued()
    rewritten = resaved(verification_files.genuine, whole=True)

    page = upload_page(client, rewritten)
    response, body = upload_api(client, rewritten)

    assert page_outcome(page) == "tampered"
    assert response.status_code == 200
    assert body["outcome"] == "tampered" and body["reliable"] is False
    # Its own finding: not one changed byte but every object moved, so the
    # signature's byte range frames other bytes.
    assert checks_of(body)["integrity"] == "failed"
    assert checks_of(body)["coverage"] == "failed"
    assert body["issuance"] is None and body["status"] is None


def test_pages_copied_into_a_new_file_lost_the_signature(
    client, register_issued, verification_files
):
    register_issued()
    copied = resaved(verification_files.genuine, whole=False)
    assert b"/ByteRange" in copied, "the signature's dictionary came along"

    page = upload_page(client, copied)
    response, body = upload_api(client, copied)

    # Not "indeterminate, try again later": the leftover signature fits
    # another file's bytes and signs nothing in this one.
    assert page_outcome(page) == "unsigned"
    assert "其他程序重新生成的文件" in page.get_data(as_text=True)
    assert body["outcome"] == "unsigned" and body["reliable"] is False
    assert "re-made by another program" in body["message"]
    assert body["checks"] == [] and body["issuance"] is None


def test_a_signed_file_whose_check_ran_out_of_time_is_indeterminate(
    verification_files,
):
    cut_short = ValidationReport(
        parses=Check(CheckOutcome.PASSED, "the file is a readable PDF"),
        signatures=(),
        ok=False,
        summary="not validated: it took more than 0 s",
    )
    genuine = verification_files.genuine
    copied = resaved(genuine, whole=False)

    assert verification.byte_ranges_fit(genuine) is True
    assert verification.byte_ranges_fit(verification_files.page_added) is True
    assert verification.byte_ranges_fit(copied) is False
    assert verification.byte_ranges_fit(verification_files.unsigned) is None
    assert verification.classify(cut_short, genuine) == "indeterminate"
    assert verification.classify(cut_short, copied) == "unsigned"
    assert verification.classify(cut_short, verification_files.unsigned) == ("unsigned")


# -- codes and the QR address --------------------------------------------------


def one_character_wrong(code: str) -> str:
    first = code[0]
    return codes.ALPHABET[(codes.ALPHABET.index(first) + 1) % codes.N] + code[1:]


@pytest.fixture
def issuance_queries(app):
    """Statements that read the issuance table, counted while a test runs."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if "transcript_issuances" in statement:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    yield seen
    event.remove(db.engine, "before_cursor_execute", count)


def test_a_code_with_one_wrong_character_is_caught_before_any_look_up(
    client, register_issued, issuance_queries
):
    issuance = register_issued()
    typo = one_character_wrong(issuance.code)
    issuance_queries.clear()

    page = client.get(f"/v?code={typo}")
    qr = client.get(f"/v/{typo}")
    response = client.get(f"/api/verify/codes/{typo}?lang=en")

    assert issuance_queries == [], "the check character answers before the database"
    assert page.status_code == 400 and "输入错误" in page.get_data(as_text=True)
    assert qr.status_code == 400
    assert response.status_code == 400
    assert response.get_json()["code"] == "malformed_code"
    assert response.get_json()["reason"] == "check"


def test_a_typed_code_is_forgiving_and_leads_to_the_qr_address(client, register_issued):
    issuance = register_issued()
    typed = issuance.code.replace("-", " ").lower()

    response = client.get("/v", query_string={"code": typed})

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/v/{issuance.code}")


def test_the_qr_address_shows_the_registered_copy_with_its_status(
    session, client, register_issued, issued_file
):
    issuance = register_issued()

    page = client.get(f"/v/{issuance.code}")
    view = client.get(f"/v/{issuance.code}/transcript.pdf")
    download = client.get(f"/v/{issuance.code}/transcript.pdf?download=1")
    response = client.get(f"/api/verify/codes/{issuance.code}")

    text = page.get_data(as_text=True)
    assert page.status_code == 200 and page_outcome(page) == "registered"
    assert "欧阳娜娜" in text and "有效" in text
    assert f"/v/{issuance.code}/transcript.pdf" in text
    assert view.data == issued_file.pdf and view.mimetype == "application/pdf"
    assert view.headers["Content-Disposition"].startswith("inline")
    assert download.headers["Content-Disposition"].startswith("attachment")
    body = response.get_json()
    assert body["outcome"] == "registered" and body["status"] == "valid"
    assert body["reliable"] is True
    assert body["registered_copy_url"].endswith(f"/v/{issuance.code}/transcript.pdf")
    log = verification.access_log(session, issuance.id)
    assert len(log) == 4 and {entry.way for entry in log} == {verification.Way.CODE}


def test_a_revoked_code_shows_the_copy_and_says_revoked(
    session, client, register_issued
):
    issuance = register_issued()
    registry.revoke(session, issuance.id, reason="issued in error", actor="operator:r")
    session.commit()

    response = client.get(f"/api/verify/codes/{issuance.code}?lang=en")

    body = response.get_json()
    assert body["outcome"] == "registered" and body["status"] == "revoked"
    assert body["reliable"] is False
    assert "issued in error" in body["status_message"]


def test_an_unknown_code_is_logged_only_as_a_digest_and_counted(
    session, client, caplog
):
    unknown = codes.new_code()
    another = codes.new_code()
    caplog.set_level(logging.INFO, logger="transcripts.verification")

    first = client.get(f"/api/verify/codes/{unknown}")
    second = client.get(f"/api/verify/codes/{another}")
    page = client.get(f"/v/{unknown}")

    assert first.status_code == second.status_code == page.status_code == 404
    assert first.get_json()["code"] == "unknown_code"
    assert first.get_json()["detail"] == second.get_json()["detail"], (
        "every unknown code gets the same words"
    )
    records = session.query(verification.VerificationRecord).all()
    assert {r.code_digest for r in records} == {
        verification.code_digest(unknown),
        verification.code_digest(another),
    }
    assert all(r.issuance_id is None for r in records)
    since = utcnow() - dt.timedelta(hours=1)
    assert verification.counts_since(session, since) == {"unknown_code": 3}
    logged = [r for r in caplog.records if r.msg == "verification_code_unknown"]
    assert len(logged) == 3
    assert all(unknown not in r.getMessage() for r in caplog.records)
    assert all(unknown not in str(r.__dict__) for r in caplog.records)


# -- share links -----------------------------------------------------------------


def make_link(session, issuance, *, now: dt.datetime, days: int = 7) -> str:
    _, token = sharing.create_link(
        session, issuance, days=days, recipient="某科技 HR", now=now, max_days=90
    )
    session.commit()
    return token


def test_a_share_link_check_is_authentic_and_logged_for_the_graduate(
    session, client, register_issued
):
    issuance = register_issued()
    token = make_link(session, issuance, now=utcnow())

    shared = client.get(f"/share/{token}")
    page = client.post(f"/share/{token}/verify")
    response = client.post("/api/verify/share", json={"token": token})

    assert shared.headers["Referrer-Policy"] == "no-referrer"
    assert f"/share/{token}/verify" in shared.get_data(as_text=True)
    assert page_outcome(page) == "authentic"
    assert response.get_json()["outcome"] == "authentic"
    assert response.get_json()["reliable"] is True
    (link,) = sharing.links_of(session, [issuance.id])
    events = [(e.kind, e.detail) for e in reversed(sharing.events_of(session, link))]
    assert events == [
        (LinkEventKind.OPENED, None),
        (LinkEventKind.VERIFIED, "authentic"),
        (LinkEventKind.VERIFIED, "authentic"),
    ]
    assert {e.way for e in verification.access_log(session, issuance.id)} == {
        verification.Way.LINK
    }


def test_an_expired_share_link_is_refused_and_the_refusal_logged(
    session, client, register_issued
):
    issuance = register_issued()
    token = make_link(session, issuance, now=utcnow() - dt.timedelta(days=3), days=1)

    page = client.post(f"/share/{token}/verify")
    response = client.post("/api/verify/share", json={"token": token})

    assert page.status_code == 404 and "该链接不可用" in page.get_data(as_text=True)
    assert response.status_code == 404
    assert response.get_json()["code"] == "share_link_unavailable"
    (link,) = sharing.links_of(session, [issuance.id])
    assert [(e.kind, e.detail) for e in sharing.events_of(session, link)] == [
        (LinkEventKind.REFUSED, "expired"),
        (LinkEventKind.REFUSED, "expired"),
    ]
    assert verification.access_log(session, issuance.id) == []


# -- the registrar's view and the API's description -------------------------------


def test_the_registrar_reads_an_issuances_access_log_and_the_counts(
    client, register_issued, sign_in_operator
):
    issuance = register_issued()
    client.get(f"/api/verify/codes/{issuance.code}")
    client.get(f"/api/verify/codes/{codes.new_code()}")
    refused = client.get(f"/api/verify/issuances/{issuance.id}/log")
    sign_in_operator(Role.AUDITOR)

    log = client.get(f"/api/verify/issuances/{issuance.id}/log").get_json()
    counts = client.get("/api/verify/statistics?days=1").get_json()

    assert refused.status_code == 401
    assert [(e["way"], e["via"], e["outcome"]) for e in log] == [
        ("code", "api", "registered")
    ]
    assert counts["outcomes"] == {"registered": 1, "unknown_code": 1}


def test_the_api_is_described_in_the_openapi_document(client):
    spec = client.get("/openapi.json").get_json()

    for path in (
        "/api/verify",
        "/api/verify/codes/{code}",
        "/api/verify/share",
        "/api/verify/issuances/{issuance_id}/log",
        "/api/verify/statistics",
    ):
        assert path in spec["paths"], path
    outcome = spec["components"]["schemas"]["VerificationOut"]["properties"]["outcome"]
    for code in verification.VerificationOutcome:
        assert code.value in outcome["description"]
    assert "/verify" not in spec["paths"] and "/v/{code}" not in spec["paths"]
