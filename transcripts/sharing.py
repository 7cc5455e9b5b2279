"""Share links: a graduate lets one employer see one issuance for a while.

A link is a random token (256 bits) in a URL; only its SHA-256 is stored, so a
copy of the database does not open anyone's transcript, and the graduate sees the
full link once, when it is made. A link has an expiry (at most
``share_link_max_days``), an optional recipient name for the graduate's own
memory, and can be revoked. Every opening, download and verification through the
link is an event the graduate can read.

Errors::

    campus.errors.CampusError
    ├── InvalidInput
    │   └── BadExpiry       an expiry in the past or too far ahead
    └── NotFound
        └── LinkUnavailable the token is unknown, revoked or expired, or the
                            issuance is no longer valid (``reason`` says which,
                            and so does the message, except that an unknown
                            token and a revoked one read the same to a
                            stranger)
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import secrets

from flask_babel import lazy_gettext
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from campus.database import Base, str_enum
from campus.errors import InvalidInput, NotFound
from transcripts.registry import Issuance

logger = logging.getLogger(__name__)


class LinkEventKind(enum.StrEnum):
    """What happened through a share link."""

    OPENED = "opened"
    """The link's page was shown."""

    DOWNLOADED = "downloaded"
    """The file was downloaded through the link."""

    VERIFIED = "verified"
    """The visitor had the file checked by the verification service."""

    REFUSED = "refused"
    """The link was used after it expired or was revoked."""


class ShareLink(Base):
    __tablename__ = "transcript_share_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    issuance_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_issuances.id", ondelete="CASCADE"), index=True
    )
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    recipient: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]

    issuance: Mapped[Issuance] = relationship(lazy="joined")

    def state(self, now: dt.datetime) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        return "active"


class ShareLinkEvent(Base):
    __tablename__ = "transcript_share_link_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    link_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_share_links.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime]
    kind: Mapped[LinkEventKind] = mapped_column(str_enum(LinkEventKind))
    detail: Mapped[str | None] = mapped_column(String(256))
    """For ``verified``: the verification's bottom line; for ``refused``: why."""


class BadExpiry(InvalidInput):
    code = "bad_expiry"
    title = lazy_gettext("Choose an expiry between tomorrow and the limit")


class LinkUnavailable(NotFound):
    code = "share_link_unavailable"
    title = lazy_gettext("This link is not available")

    def __init__(self, reason: str) -> None:
        # What the visitor may know: a link that ran out, or a transcript the
        # registrar replaced or revoked, is said so (the verification service
        # says as much to anyone with its code). A withdrawn link reads like an
        # unknown one, so that nobody learns a link once existed.
        super().__init__(_REFUSALS.get(reason, _REFUSALS["unknown"]))
        self.reason = reason


_REFUSALS = {
    "expired": lazy_gettext(
        "This link has expired. Please ask the graduate for a new one."
    ),
    "issuance_superseded": lazy_gettext(
        "The transcript behind this link has been replaced by a newer one. Please "
        "ask the graduate for a link to the new transcript."
    ),
    "issuance_revoked": lazy_gettext(
        "The transcript behind this link has been revoked by the registrar and is "
        "no longer valid."
    ),
    "issuance_expired": lazy_gettext(
        "The transcript behind this link is past its validity date. Please ask "
        "the graduate for a current one."
    ),
    "unknown": lazy_gettext(
        "This link is not valid: it was withdrawn, or its address is incomplete. "
        "Please ask the graduate for a new one."
    ),
}


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def create_link(
    session: Session,
    issuance: Issuance,
    *,
    days: int,
    recipient: str | None,
    now: dt.datetime,
    max_days: int,
) -> tuple[ShareLink, str]:
    """A new link and its token (shown to the graduate once, never stored)."""
    if not 1 <= days <= max_days:
        raise BadExpiry(
            lazy_gettext("An expiry of 1 to %(days)s days, please.", days=max_days)
        )
    token = secrets.token_urlsafe(32)
    expires_at = min(now + dt.timedelta(days=days), issuance.valid_until)
    link = ShareLink(
        issuance_id=issuance.id,
        token_sha256=token_digest(token),
        recipient=(recipient or "").strip()[:128] or None,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(link)
    session.flush()
    logger.info("share_link_created", extra={"link": link.id, "issuance": issuance.id})
    return link, token


def revoke_link(session: Session, link: ShareLink, now: dt.datetime) -> None:
    if link.revoked_at is None:
        link.revoked_at = now
        logger.info("share_link_revoked", extra={"link": link.id})


def record(
    session: Session,
    link: ShareLink,
    kind: LinkEventKind,
    now: dt.datetime,
    detail: str | None = None,
) -> None:
    session.add(ShareLinkEvent(link_id=link.id, at=now, kind=kind, detail=detail))
    session.flush()


def open_link(
    session: Session, token: str, now: dt.datetime, kind: LinkEventKind
) -> ShareLink:
    """The link of ``token`` if it may be used now, recording the use (``kind``)
    or the refusal; otherwise ``LinkUnavailable``."""
    link = session.scalar(
        select(ShareLink).where(ShareLink.token_sha256 == token_digest(token))
    )
    if link is None:
        logger.warning("share_link_unknown")
        raise LinkUnavailable("unknown")
    state = link.state(now)
    if state == "active" and link.issuance.effective_status(now) != "valid":
        state = "issuance_" + link.issuance.effective_status(now)
    if state != "active":
        record(session, link, LinkEventKind.REFUSED, now, state)
        logger.info("share_link_refused", extra={"link": link.id, "state": state})
        raise LinkUnavailable(state)
    record(session, link, kind, now)
    return link


def links_of(session: Session, issuance_ids: list[int]) -> list[ShareLink]:
    return list(
        session.scalars(
            select(ShareLink)
            .where(ShareLink.issuance_id.in_(issuance_ids))
            .order_by(ShareLink.created_at.desc(), ShareLink.id.desc())
        )
    )


def events_of(session: Session, link: ShareLink) -> list[ShareLinkEvent]:
    return list(
        session.scalars(
            select(ShareLinkEvent)
            .where(ShareLinkEvent.link_id == link.id)
            .order_by(ShareLinkEvent.at.desc(), ShareLinkEvent.id.desc())
        )
    )
