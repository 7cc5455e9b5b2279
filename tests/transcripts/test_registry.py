"""The issuance registry: issuing, revoking, superseding, all audited."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from campus.auth import Role
from transcripts import codes, registry
from transcripts.registry import IssuanceAction, IssuanceStatus

from .conftest import NOW, give_grades, make_student


@pytest.fixture
def graduate(session):
    student = make_student(session)
    give_grades(session, student, terms=1)
    session.commit()
    return student


def _issue(session, student, now=NOW):
    issuance = registry.issue(session, student, actor="test", now=now)
    session.commit()
    return issuance


def test_issuing_registers_hash_code_validity_and_an_audit_event(session, graduate):
    issuance = _issue(session, graduate)

    stored = registry.stored_file(issuance)
    assert issuance.sha256 == hashlib.sha256(stored).hexdigest()
    assert stored.startswith(b"%PDF")
    assert codes.normalise(issuance.code) == issuance.code
    assert issuance.document_version == 1
    assert issuance.valid_until == NOW + dt.timedelta(days=365)
    assert issuance.signature_level == "B-LTA"
    assert issuance.effective_status(NOW) == "valid"
    assert registry.find_by_code(session, issuance.code.lower()) == issuance
    assert registry.find_by_sha256(session, issuance.sha256) == issuance
    events = registry.events_of(session, issuance)
    assert [(e.action, e.actor) for e in events] == [(IssuanceAction.ISSUED, "test")]


def test_a_mistyped_code_is_caught_before_any_lookup(session, graduate):
    issuance = _issue(session, graduate)
    typo = ("1" if issuance.code[0] != "1" else "2") + issuance.code[1:]

    with pytest.raises(codes.MalformedCode):
        registry.find_by_code(session, typo)


def test_an_issuance_reads_as_expired_after_its_validity(session, graduate):
    issuance = _issue(session, graduate)

    later = issuance.valid_until + dt.timedelta(seconds=1)
    assert issuance.effective_status(later) == "expired"
    assert registry.current_issuance(session, graduate, later) is None
    assert registry.current_issuance(session, graduate, NOW) == issuance


def test_revocation_needs_a_reason_and_is_audited(session, graduate):
    issuance = _issue(session, graduate)

    with pytest.raises(registry.ReasonRequired):
        registry.revoke(session, issuance.id, reason="  ", actor="operator:r")
    revoked = registry.revoke(
        session, issuance.id, reason="成绩更正 grade corrected", actor="operator:r"
    )
    session.commit()

    assert revoked.status is IssuanceStatus.REVOKED
    assert revoked.status_reason == "成绩更正 grade corrected"
    assert revoked.effective_status(NOW) == "revoked"
    events = registry.events_of(session, revoked)
    assert [(e.action, e.actor, e.reason) for e in events][-1] == (
        IssuanceAction.REVOKED,
        "operator:r",
        "成绩更正 grade corrected",
    )
    with pytest.raises(registry.StatusConflict):
        registry.revoke(session, issuance.id, reason="again", actor="operator:r")


def test_supersession_issues_anew_from_corrected_records(session, graduate):
    old = _issue(session, graduate)
    entry = graduate.grades[0]
    entry.score = entry.score + 5
    session.commit()

    new = registry.supersede(
        session, old.id, reason="grade corrected", actor="operator:r", now=NOW
    )
    session.commit()

    session.refresh(old)
    assert old.status is IssuanceStatus.SUPERSEDED
    assert old.superseded_by_id == new.id
    assert old.status_reason == "grade corrected"
    assert new.document_version == 2
    assert new.status is IssuanceStatus.VALID
    assert new.sha256 != old.sha256 and new.code != old.code
    assert registry.current_issuance(session, graduate, NOW) == new
    assert [e.action for e in registry.events_of(session, old)] == [
        IssuanceAction.ISSUED,
        IssuanceAction.SUPERSEDED,
    ]
    with pytest.raises(registry.StatusConflict):
        registry.supersede(session, old.id, reason="again", actor="operator:r")


def test_the_registrar_api_revokes_and_supersedes(
    session, client, graduate, sign_in_operator
):
    first = _issue(session, graduate)
    second = _issue(session, graduate)
    sign_in_operator(Role.REGISTRAR)

    revoked = client.post(
        f"/api/transcripts/issuances/{first.id}/revoke", json={"reason": "error"}
    )
    superseding = client.post(
        f"/api/transcripts/issuances/{second.id}/supersede", json={"reason": "fix"}
    )
    listing = client.get(f"/api/transcripts/students/{graduate.number}/issuances")

    assert revoked.status_code == 200
    assert revoked.get_json()["status"] == "revoked"
    assert superseding.status_code == 201
    assert superseding.get_json()["document_version"] == 3
    statuses = {i["id"]: i["status"] for i in listing.get_json()}
    assert statuses == {
        first.id: "revoked",
        second.id: "superseded",
        superseding.get_json()["id"]: "valid",
    }


def test_other_roles_cannot_revoke(session, client, graduate, sign_in_operator):
    issuance = _issue(session, graduate)
    sign_in_operator(Role.CASHIER)

    response = client.post(
        f"/api/transcripts/issuances/{issuance.id}/revoke", json={"reason": "x"}
    )

    assert response.status_code == 403
    session.refresh(issuance)
    assert issuance.status is IssuanceStatus.VALID


def test_storage_keeps_one_copy_per_content_and_refuses_escapes(tmp_path):
    from transcripts.storage import FileStorage, StorageError, StoredFileMissing

    storage = FileStorage(tmp_path)
    key = storage.put(b"%PDF-1.7 one")

    assert storage.put(b"%PDF-1.7 one") == key
    assert storage.get(key) == b"%PDF-1.7 one"
    assert storage.exists(key)
    with pytest.raises(StoredFileMissing):
        storage.get("00/00/" + "0" * 64 + ".pdf")
    with pytest.raises(StorageError):
        storage.get("../../etc/passwd")
