"""The graduate's pages over HTTP: issue on demand (rate-limited), download,
share, revoke; and the registrar's batch page."""

from __future__ import annotations

import dataclasses
import re

import pytest

from campus.auth import Role
from transcripts import registry, sharing

from .conftest import give_grades, make_student


@pytest.fixture
def signed_in_graduate(session, client):
    student = make_student(session, name_zh="诸葛亮", name_en="Liang Zhuge")
    give_grades(session, student, terms=1)
    session.commit()
    response = client.post("/sign-in/dev", data={"number": student.number})
    assert response.status_code == 302
    return student


def test_a_graduate_issues_downloads_and_shares(session, client, signed_in_graduate):
    empty = client.get("/me/transcripts?lang=en")
    issued = client.post("/me/transcripts/issue", follow_redirects=True)
    current = client.get("/me/transcripts/current.pdf")

    assert "You have no valid transcript" in empty.get_data(as_text=True)
    assert issued.status_code == 200
    issuance = registry.current_issuance(session, signed_in_graduate, registry.utcnow())
    assert issuance is not None and issuance.issued_by.startswith("student:")
    assert current.status_code == 200
    assert current.mimetype == "application/pdf"
    assert current.data == registry.stored_file(issuance)

    page = client.post(
        f"/me/transcripts/{issuance.id}/links",
        data={"days": "14", "recipient": "腾讯 HR"},
        follow_redirects=True,
    )
    text = page.get_data(as_text=True)
    url = re.search(r"http://localhost/share/[\w-]+", text)
    assert url is not None, "the new link is shown once"
    assert "腾讯 HR" in text

    visitor = client.application.test_client()
    assert visitor.get(url.group(0)).status_code == 200
    again = client.get("/me/transcripts?lang=en").get_data(as_text=True)
    assert "Activity (1)" in again
    assert url.group(0) not in again, "the link is not shown a second time"

    (link,) = sharing.links_of(session, [issuance.id])
    client.post(f"/me/links/{link.id}/revoke")
    assert visitor.get(url.group(0)).status_code == 404


def test_on_demand_issuance_is_rate_limited_per_student(
    app, session, client, signed_in_graduate
):
    service = registry.transcript_service(app)
    service.config = dataclasses.replace(service.config, on_demand_limit="2 per hour")

    for _ in range(3):
        last = client.post("/me/transcripts/issue?lang=en", follow_redirects=True)

    assert "Too many transcripts" in last.get_data(as_text=True)
    assert len(registry.issuances_of(session, signed_in_graduate)) == 2


def test_a_graduate_cannot_download_another_s_transcript(
    session, client, signed_in_graduate
):
    other = make_student(session)
    give_grades(session, other, terms=1)
    session.commit()
    theirs = registry.issue(session, other, actor="test")
    session.commit()

    response = client.get(f"/me/transcripts/{theirs.id}.pdf")

    assert response.status_code == 404


def test_the_pages_need_a_signed_in_student(client):
    response = client.get("/me/transcripts", headers={"Accept": "text/html"})

    assert response.status_code == 302
    assert "/sign-in" in response.headers["Location"]


def test_the_registrar_page_finds_a_student_and_lists_batches(
    session, client, sign_in_operator
):
    student = make_student(session, name_zh="司马迁")
    session.commit()
    sign_in_operator(Role.REGISTRAR)

    page = client.get(f"/registrar/transcripts?number={student.number}&lang=zh")

    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "司马迁" in text and "按届别批量签发" in text


def test_a_batch_started_by_the_registrar_runs_and_reports_progress(
    session, client, sign_in_operator
):
    from transcripts import views

    for _ in range(2):
        student = make_student(session, college_zh="网页批次学院")
        give_grades(session, student, terms=1)
    session.commit()
    sign_in_operator(Role.REGISTRAR)

    started = client.post(
        "/registrar/transcripts/batches",
        data={"college": "网页批次学院", "year": "2026"},
    )
    batch_id = int(started.headers["Location"].rsplit("/", 1)[1])
    views._running[batch_id].join(timeout=120)
    progress = client.get(f"/api/transcripts/batches/{batch_id}").get_json()
    page = client.get(f"/registrar/transcripts/batches/{batch_id}?lang=en")

    assert started.status_code == 302
    assert progress == {
        "batch_id": batch_id,
        "total": 2,
        "issued": 2,
        "failed": 0,
        "pending": 0,
        "finished": True,
        "failures": [],
    }
    assert "2 of 2 issued, 0 failed" in page.get_data(as_text=True)
