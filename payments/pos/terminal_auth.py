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

What checking a signature needs of a terminal (its id, secret, merchant and the
merchant's payable account) is kept per process for ``SIGNER_CACHE_SECONDS`` (60):
those never change in this service, and a signature that fails against a kept
secret is checked again against the database's, so a secret changed by hand is
accepted at once and the old one for at most that long. Whether the terminal and
its merchant are enabled is never kept: the nonce is inserted only if they are, in
the statement that remembers it, so a disabled terminal is refused on its very
next request. ``POST /api/terminal/payments`` remembers its nonce in the payment's
own transaction (``PendingNonce``): a replay waits on the nonce's primary key for
the first request to commit, and is then refused.
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

from flask import current_app, request
from flask_babel import lazy_gettext
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campus.database import UTCDateTime, db
from campus.driver import DriverStatement
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


SIGNER_CACHE_SECONDS = 60
"""How long a process keeps a terminal's secret, merchant and payable account."""


class PendingNonce:
    """A verified request's nonce, not yet remembered: the endpoint remembers it
    in its first writing transaction (``remember``), or on its own
    (``remember_now``) before anything else it does could have an effect."""

    __slots__ = ("done", "expires_at", "key_id", "nonce", "path", "terminal_id")

    def __init__(
        self,
        terminal_id: int,
        key_id: str,
        nonce: str,
        expires_at: dt.datetime,
        path: str,
    ) -> None:
        self.terminal_id = terminal_id
        self.key_id = key_id
        self.nonce = nonce
        self.expires_at = expires_at
        self.path = path
        self.done = False

    def remember(self, session: Session) -> None:
        """Insert the nonce in the session's transaction, refusing a disabled
        terminal. A reused nonce raises ``SignatureRefused``; the transaction
        can then only be rolled back (the caller's ``db.transaction`` does)."""
        if self.done:
            return
        log = {"terminal": self.key_id[:32], "path": self.path}
        try:
            inserted = _REMEMBER.first(
                session.connection(),
                {
                    "terminal_id": self.terminal_id,
                    "nonce": self.nonce,
                    "expires_at": self.expires_at,
                },
            )
        except IntegrityError:
            logger.warning("terminal_nonce_reused", extra=log)
            raise SignatureRefused(
                lazy_gettext("This request was already received (nonce reused)."),
                reason="nonce",
            ) from None
        if inserted is None:
            logger.warning("terminal_disabled", extra=log)
            raise TerminalDisabled()
        self.done = True

    def forget(self) -> None:
        """The transaction that remembered the nonce was rolled back."""
        self.done = False

    def remember_now(self) -> None:
        """Remember the nonce in a transaction of its own, committed at once."""
        if self.done:
            return
        # End any read the request left open first: on SQLite a snapshot older
        # than another connection's commit cannot become a write. A commit, not a
        # rollback: see ``_signer``.
        db.session.commit()
        with db.transaction() as session:
            self.remember(session)


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
    nonce: PendingNonce | None = None
    """Set while the request's nonce is still to be remembered (see ``verify``);
    ``None`` for the web POS, whose cashier signs in instead."""

    def remember_nonce(self, session: Session) -> None:
        if self.nonce is not None:
            self.nonce.remember(session)

    def remember_nonce_now(self) -> None:
        if self.nonce is not None:
            self.nonce.remember_now()

    def forget_nonce(self) -> None:
        if self.nonce is not None:
            self.nonce.forget()

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
_NONCES = TerminalNonce.__table__
# One Core query for what verifying and paying need: no ORM objects are loaded on
# a path every terminal request takes. Enabled flags are not read here: see
# ``_REMEMBER``.
_SIGNER = DriverStatement(
    select(
        _TERMINALS.c.id,
        _TERMINALS.c.secret,
        _TERMINALS.c.merchant_id,
        _MERCHANTS.c.code,
        _ACCOUNTS.c.id,
        _ACCOUNTS.c.code,
        _ACCOUNTS.c.allow_negative,
    )
    .select_from(
        _TERMINALS.join(_MERCHANTS, _TERMINALS.c.merchant_id == _MERCHANTS.c.id).join(
            _ACCOUNTS, _MERCHANTS.c.payable_account_id == _ACCOUNTS.c.id
        )
    )
    .where(_TERMINALS.c.key_id == bindparam("key_id"))
)
# The nonce is inserted only while the terminal and its merchant are enabled: one
# statement both refuses a disabled terminal (no row) and a reused nonce (the
# primary key), read in the transaction that pays, never from a cache. Run on the
# driver (``campus.driver``): every payment remembers its nonce.
_REMEMBER = DriverStatement(
    insert(_NONCES)
    .from_select(
        ["terminal_id", "nonce", "expires_at"],
        select(
            _TERMINALS.c.id,
            bindparam("nonce", type_=_NONCES.c.nonce.type),
            bindparam("expires_at", type_=UTCDateTime()),
        )
        .select_from(
            _TERMINALS.join(_MERCHANTS, _TERMINALS.c.merchant_id == _MERCHANTS.c.id)
        )
        .where(
            _TERMINALS.c.id == bindparam("terminal_id"),
            _TERMINALS.c.enabled.is_(True),
            _MERCHANTS.c.active.is_(True),
        ),
    )
    .returning(_NONCES.c.terminal_id)
)


class _Signer(NamedTuple):
    terminal_id: int
    secret: str
    merchant_id: int
    merchant_code: str
    payable: AccountRef
    read_at: float


def _signer(key_id: str, *, fresh: bool = False) -> _Signer | None:
    """The terminal's secret and ids, kept per app and process for
    ``SIGNER_CACHE_SECONDS``; read again when ``fresh`` or older."""
    kept: dict[str, _Signer] = current_app.extensions.setdefault(
        "payments.pos.signers", {}
    )
    now = time.monotonic()
    signer = kept.get(key_id)
    if signer is not None and not fresh and now - signer.read_at < SIGNER_CACHE_SECONDS:
        return signer
    session = db.session()
    row = _SIGNER.first(session.connection(), {"key_id": key_id})
    # Commit, not roll back, the read: on PostgreSQL a rollback makes psycopg
    # drop every statement it prepared on the connection (DEALLOCATE ALL), one
    # round trip more and every later statement parsed and planned afresh.
    session.commit()
    if row is None:
        kept.pop(key_id, None)
        return None
    # SQLite's driver gives a boolean as 0 or 1.
    payable = AccountRef(row[4], row[5], bool(row[6]))
    signer = _Signer(row[0], row[1], row[2], row[3], payable, now)
    kept[key_id] = signer
    return signer


def _signature_matches(secret: str, message: bytes, presented: bytes) -> bool:
    expected = hmac.new(secret.encode(), message, "sha256").digest()
    return hmac.compare_digest(expected, presented)


def verify(
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    *,
    defer_nonce: bool = False,
) -> SignedBy:
    """The terminal that signed this request, or ``SignatureRefused`` /
    ``TerminalDisabled``. Remembers the nonce (committed at once), unless
    ``defer_nonce``: then the caller must remember it (``SignedBy.nonce``) before
    the request can have any effect."""
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

    started = time.monotonic()
    signer = _signer(key_id)
    if signer is None:
        logger.warning("terminal_unknown", extra=log)
        raise SignatureRefused(lazy_gettext("Unknown terminal key."), reason="key")
    message = string_to_sign(method, path, stamp, nonce, body)
    try:
        presented = base64.b64decode(given, validate=True)
    except ValueError:
        presented = b""
    matches = _signature_matches(signer.secret, message, presented)
    if not matches and signer.read_at < started:
        # The kept secret may be older than the database's: ask once more.
        signer = _signer(key_id, fresh=True)
        matches = signer is not None and _signature_matches(
            signer.secret, message, presented
        )
    if not matches or signer is None:
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
    pending = PendingNonce(
        signer.terminal_id, key_id, nonce, signed_at + 2 * window, path
    )
    if not defer_nonce:
        pending.remember_now()
    return SignedBy(
        signer.terminal_id,
        key_id,
        signer.merchant_id,
        signer.merchant_code,
        signer.payable,
        pending,
    )


def current_terminal(*, defer_nonce: bool = False) -> SignedBy:
    """Verify the request being served; cached for the request (in its environ,
    not ``g``: an app context, and so ``g``, can outlive one request)."""
    if "campus.terminal" not in request.environ:
        path = request.full_path if request.query_string else request.path
        request.environ["campus.terminal"] = verify(
            request.headers,
            request.method,
            path,
            request.get_data(cache=True),
            defer_nonce=defer_nonce,
        )
    signed_by: SignedBy = request.environ["campus.terminal"]
    return signed_by


def prune_nonces(now: dt.datetime) -> int:
    with db.transaction() as session:
        result = session.execute(
            delete(TerminalNonce).where(TerminalNonce.expires_at < now)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
