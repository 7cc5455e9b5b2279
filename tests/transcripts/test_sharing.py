"""Share links: expiry, revocation, and the activity a graduate sees."""

from __future__ import annotations

import datetime as dt

import pytest

from transcripts import registry, sharing
from transcripts.sharing import LinkEventKind

from .conftest import NOW, give_grades, make_student


@pytest.fixture
def issuance(session):
    student = make_student(session)
    give_grades(session, student, terms=1)
    session.commit()
    issued = registry.issue(session, student, actor="test", now=NOW)
    session.commit()
    return issued


def _link(session, issuance, days=7, now=NOW):
    link, token = sharing.create_link(
        session, issuance, days=days, recipient="某某科技 HR", now=now, max_days=90
    )
    session.commit()
    return link, token


def test_a_link_opens_until_it_expires_and_every_use_is_logged(session, issuance):
    link, token = _link(session, issuance, days=7)

    opened = sharing.open_link(session, token, NOW, LinkEventKind.OPENED)
    sharing.open_link(
        session, token, NOW + dt.timedelta(days=6), LinkEventKind.DOWNLOADED
    )
    with pytest.raises(sharing.LinkUnavailable) as refused:
        sharing.open_link(
            session, token, NOW + dt.timedelta(days=7), LinkEventKind.OPENED
        )
    session.commit()

    assert opened.issuance_id == issuance.id
    assert refused.value.reason == "expired"
    assert "已过期" in str(refused.value.detail)  # Chinese first
    assert link.state(NOW + dt.timedelta(days=7)) == "expired"
    events = [(e.kind, e.detail) for e in reversed(sharing.events_of(session, link))]
    assert events == [
        (LinkEventKind.OPENED, None),
        (LinkEventKind.DOWNLOADED, None),
        (LinkEventKind.REFUSED, "expired"),
    ]


def test_a_revoked_link_is_refused(session, issuance):
    link, token = _link(session, issuance)

    sharing.revoke_link(session, link, NOW + dt.timedelta(hours=1))
    session.commit()

    with pytest.raises(sharing.LinkUnavailable) as refused:
        sharing.open_link(
            session, token, NOW + dt.timedelta(hours=2), LinkEventKind.OPENED
        )
    assert refused.value.reason == "revoked"


def test_a_link_to_a_revoked_issuance_is_refused(session, issuance):
    _, token = _link(session, issuance)
    registry.revoke(session, issuance.id, reason="error", actor="operator:r")
    session.commit()

    with pytest.raises(sharing.LinkUnavailable) as refused:
        sharing.open_link(session, token, NOW, LinkEventKind.OPENED)
    assert refused.value.reason == "issuance_revoked"
    assert "已被教务处撤销" in str(refused.value.detail)  # Chinese first


def test_an_unknown_token_is_refused_like_any_other(session, issuance):
    with pytest.raises(sharing.LinkUnavailable) as refused:
        sharing.open_link(session, "not-a-token", NOW, LinkEventKind.OPENED)

    assert refused.value.reason == "unknown"
    # A withdrawn link and one that never was read the same.
    assert str(refused.value.detail) == str(sharing.LinkUnavailable("revoked").detail)


def test_expiry_is_bounded_and_never_outlives_the_issuance(session, issuance):
    with pytest.raises(sharing.BadExpiry):
        _link(session, issuance, days=0)
    with pytest.raises(sharing.BadExpiry):
        _link(session, issuance, days=91)

    late = issuance.valid_until - dt.timedelta(days=2)
    link, _ = _link(session, issuance, days=30, now=late)
    assert link.expires_at == issuance.valid_until


def test_only_the_token_s_hash_is_stored(session, issuance):
    link, token = _link(session, issuance)

    assert token not in link.token_sha256
    assert link.token_sha256 == sharing.token_digest(token)
    assert len(token) >= 43, "256 bits in URL-safe base64"


def test_the_share_page_serves_the_file_then_refuses_after_revocation(
    session, client, issuance
):
    # The web pages read the real clock.
    link, token = _link(session, issuance, days=30, now=registry.utcnow())

    page = client.get(f"/share/{token}?lang=en")
    download = client.get(f"/share/{token}/transcript.pdf")
    sharing.revoke_link(session, link, registry.utcnow())
    session.commit()
    refused = client.get(f"/share/{token}?lang=en")

    assert page.status_code == 200
    assert issuance.code in page.get_data(as_text=True)
    assert download.status_code == 200
    assert download.data == registry.stored_file(issuance)
    assert download.headers["Cache-Control"] == "private, no-store"
    assert refused.status_code == 404
    assert "it was withdrawn, or its address is incomplete" in refused.get_data(
        as_text=True
    )
    kinds = [e.kind for e in reversed(sharing.events_of(session, link))]
    assert kinds == [
        LinkEventKind.OPENED,
        LinkEventKind.DOWNLOADED,
        LinkEventKind.REFUSED,
    ]
