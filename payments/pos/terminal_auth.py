"""The signature every terminal request carries.

Headers::

    X-Terminal-Key    the terminal's key id (``T…``)
    X-Timestamp       Unix seconds when the request was signed
    X-Nonce           16–64 characters of [A-Za-z0-9_-], never reused
    X-Signature       base64(HMAC-SHA256(secret, string_to_sign))

    string_to_sign = METHOD "\\n" PATH "\\n" TIMESTAMP "\\n" NONCE "\\n"
                     hex(SHA-256(body))

``PATH`` includes the query string when there is one; an empty body hashes to
SHA-256 of nothing. A timestamp more than ``signature_window_seconds`` (300) from
our clock is refused, as is a nonce this terminal has used before: nonces are
remembered **in the database** (``pos_terminal_nonces``, primary key terminal +
nonce) until twice the window has passed, so that every web process shares them
without Redis; ``prune_nonces`` deletes the expired ones and runs with the stale
payment job. A disabled terminal, or one of an inactive merchant, is refused.

The signature is checked before the nonce is remembered, so that nobody can burn
a terminal's nonces without its key; the comparison is in constant time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import NamedTuple

from flask import request
from flask_babel import lazy_gettext
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from campus.database import db
from campus.errors import AuthenticationRequired, Forbidden
from payments.ledger import Account, AccountRef
from payments.merchants import Merchant, Terminal
from payments.pos.config import pos_config
from payments.pos.models import TerminalNonce

logger = logging.getLogger(__name__)

KEY_HEADER = "X-Terminal-Key"
TIMESTAMP_HEADER = "X-Timestamp"
NONCE_HEADER = "X-Nonce"
SIGNATURE_HEADER = "X-Signature"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


class SignedBy(NamedTuple):
    """The terminal a request was verified for: what the payment path needs of
    it, read once, before the nonce's commit expires the ORM objects."""

    id: int
    key_id: str
    merchant_id: int
    merchant_code: str
    payable: AccountRef
    """The merchant's payable account, loaded with the terminal (joined), so that
    a wallet payment does not look it up again."""

    @classmethod
    def of(cls, terminal: Terminal) -> SignedBy:
        merchant = terminal.merchant
        payable = merchant.payable
        return cls(
            terminal.id,
            terminal.key_id,
            terminal.merchant_id,
            merchant.code,
            AccountRef(payable.id, payable.code, payable.allow_negative),
        )


class SignatureRefused(AuthenticationRequired):
    """``reason`` in the answer says which check failed: ``unsigned``, ``key``,
    ``signature``, ``stale`` or ``nonce``."""

    code = "terminal_signature_refused"
    title = lazy_gettext("The terminal's signature was refused")


class TerminalDisabled(Forbidden):
    code = "terminal_disabled"
    title = lazy_gettext("This terminal is disabled")


def string_to_sign(
    method: str, path: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path, timestamp, nonce, digest]).encode()


def sign(
    secret: str,
    method: str,
    path: str,
    body: bytes,
    *,
    key_id: str,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers a terminal sends (used by the CLI, the web POS and tests)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(18)
    mac = hmac.new(
        secret.encode(), string_to_sign(method, path, stamp, nonce, body), "sha256"
    )
    return {
        KEY_HEADER: key_id,
        TIMESTAMP_HEADER: stamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(mac.digest()).decode(),
    }


_TERMINALS = Terminal.__table__
_MERCHANTS = Merchant.__table__
_ACCOUNTS = Account.__table__
# One Core query for what verifying and paying need: no ORM objects are loaded on
# a path every terminal request takes.
_SIGNER = select(
    _TERMINALS.c.id,
    _TERMINALS.c.secret,
    _TERMINALS.c.enabled,
    _TERMINALS.c.merchant_id,
    _MERCHANTS.c.code,
    _MERCHANTS.c.active,
    _ACCOUNTS.c.id,
    _ACCOUNTS.c.code,
    _ACCOUNTS.c.allow_negative,
).select_from(
    _TERMINALS.join(_MERCHANTS, _TERMINALS.c.merchant_id == _MERCHANTS.c.id).join(
        _ACCOUNTS, _MERCHANTS.c.payable_account_id == _ACCOUNTS.c.id
    )
)


def verify(headers: Mapping[str, str], method: str, path: str, body: bytes) -> SignedBy:
    """The terminal that signed this request, or ``SignatureRefused`` /
    ``TerminalDisabled``. Remembers the nonce (committed at once)."""
    key_id = headers.get(KEY_HEADER, "")
    stamp = headers.get(TIMESTAMP_HEADER, "")
    nonce = headers.get(NONCE_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    log = {"terminal": key_id[:32], "path": path}
    if not (key_id and stamp.isdigit() and _NONCE.fullmatch(nonce) and given):
        logger.warning("terminal_signature_missing", extra=log)
        raise SignatureRefused(
            lazy_gettext("The request is not signed."), reason="unsigned"
        )

    session = db.session()
    row = (
        session.connection()
        .execute(_SIGNER.where(_TERMINALS.c.key_id == key_id))
        .first()
    )
    if row is None:
        logger.warning("terminal_unknown", extra=log)
        raise SignatureRefused(lazy_gettext("Unknown terminal key."), reason="key")
    terminal_id, secret, enabled, merchant_id, merchant_code, active = row[:6]
    expected = hmac.new(
        secret.encode(),
        string_to_sign(method, path, stamp, nonce, body),
        "sha256",
    ).digest()
    try:
        presented = base64.b64decode(given, validate=True)
    except ValueError:
        presented = b""
    if not hmac.compare_digest(expected, presented):
        logger.warning("terminal_signature_bad", extra=log)
        raise SignatureRefused(
            lazy_gettext("The signature does not match."), reason="signature"
        )

    config = pos_config()
    now = config.now()
    signed_at = dt.datetime.fromtimestamp(int(stamp), dt.UTC)
    window = dt.timedelta(seconds=config.signature_window_seconds)
    if abs(now - signed_at) > window:
        logger.warning("terminal_signature_stale", extra=log)
        raise SignatureRefused(
            lazy_gettext("The request's timestamp is too old or in the future."),
            reason="stale",
        )
    if not enabled or not active:
        logger.warning("terminal_disabled", extra=log)
        raise TerminalDisabled()
    signed_by = SignedBy(
        terminal_id, key_id, merchant_id, merchant_code, AccountRef(*row[6:])
    )
    # Commit, not roll back, the read: on PostgreSQL a rollback makes psycopg
    # drop every statement it prepared on the connection (DEALLOCATE ALL), one
    # round trip more and every later statement parsed and planned afresh.
    session.commit()
    try:
        with db.transaction() as writer:
            writer.execute(
                insert(TerminalNonce).values(
                    terminal_id=terminal_id,
                    nonce=nonce,
                    expires_at=signed_at + 2 * window,
                )
            )
    except IntegrityError:
        logger.warning("terminal_nonce_reused", extra=log)
        raise SignatureRefused(
            lazy_gettext("This request was already received (nonce reused)."),
            reason="nonce",
        ) from None
    return signed_by


def current_terminal() -> SignedBy:
    """Verify the request being served; cached for the request (in its environ,
    not ``g``: an app context, and so ``g``, can outlive one request)."""
    if "campus.terminal" not in request.environ:
        path = request.full_path if request.query_string else request.path
        request.environ["campus.terminal"] = verify(
            request.headers, request.method, path, request.get_data(cache=True)
        )
    signed_by: SignedBy = request.environ["campus.terminal"]
    return signed_by


def prune_nonces(now: dt.datetime) -> int:
    with db.transaction() as session:
        result = session.execute(
            delete(TerminalNonce).where(TerminalNonce.expires_at < now)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
