"""A double-entry ledger in integer fen.

Every movement of money is a journal entry of two or more postings whose amounts sum
to zero. A posting's amount is the change to its account's balance: a top-up of
12.50 posts ``-1250`` to the channel's clearing account and ``+1250`` to the wallet,
which reads as "1250 fen moved from clearing to the wallet". So

* a wallet's balance is what the university owes its cardholder, never below zero;
* a merchant payable's balance is what the university owes the merchant; it goes
  negative when a refund follows the payout of the takings it comes from (the
  merchant then owes the university, and its next statements net it out);
* a channel clearing account goes negative by what the channel has collected for us
  and not yet paid out; fee and suspense accounts may go either way.

Each account keeps a cached ``balance_fen`` beside its postings, updated in the same
transaction with one conditional ``UPDATE`` per account, so that two concurrent
debits cannot both see enough money; a check constraint on the table refuses a
negative balance on any account that may not go negative, as a second line of
defence. ``check_ledger`` proves the cache against the postings.

Each entry carries a unique ``idempotency_ref`` naming the business event it records
(``top_up:T20261203…``); posting the same event twice returns the first entry and
posts nothing, also when ten threads try at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from flask_babel import lazy_gettext
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value

from campus import clock
from campus.database import Base, str_enum, utcnow
from campus.driver import DriverStatement
from campus.errors import Conflict, InsufficientFunds

logger = logging.getLogger(__name__)


class AccountKind(enum.StrEnum):
    """What an account holds. The kind decides whether it may go negative."""

    WALLET = "wallet"
    """A card's balance: money owed to the cardholder. Never negative."""

    MERCHANT_PAYABLE = "merchant_payable"
    """Earned by a merchant and not yet settled. Negative after a refund of a
    payment already paid out: a cashier must be able to refund yesterday's meal
    after last night's settlement, and the merchant's next statement recovers it."""

    MERCHANT_SETTLED = "merchant_settled"
    """Paid out to a merchant by settlement. Grows negative as money leaves."""

    CHANNEL_CLEARING = "channel_clearing"
    """Collected by WeChat Pay or Alipay on our behalf (negative until they pay
    it out to the university's bank account)."""

    FEES = "fees"
    """Fees a channel charged."""

    CARD_PURSE = "card_purse"
    """Money written onto a card's offline chip purse, spent at terminals without
    a network. Never negative."""

    SUSPENSE = "suspense"
    """Money whose owner is not yet known, parked by a finance decision."""


NON_NEGATIVE_KINDS = frozenset({AccountKind.WALLET, AccountKind.CARD_PURSE})


class EntryKind(enum.StrEnum):
    """The business event a journal entry records."""

    TOP_UP = "top_up"
    """Money from a channel into a wallet."""

    PAYMENT = "payment"
    """A POS payment: from a wallet or a channel to a merchant payable."""

    REFUND = "refund"
    """A payment given back, in full or in part."""

    REVERSAL = "reversal"
    """A posted entry undone because its event turned out not to have happened."""

    PURSE_LOAD = "purse_load"
    """Money written onto a card's offline chip purse."""

    SETTLEMENT = "settlement"
    """A merchant paid out: payable to settled."""

    FEE = "fee"
    """A channel fee."""

    ADJUSTMENT = "adjustment"
    """A finance operator's correction, with a reason, after reconciliation."""

    OPENING = "opening"
    """An opening balance moved in from a previous system."""


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("allow_negative OR balance_fen >= 0", name="non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[AccountKind] = mapped_column(str_enum(AccountKind, length=24))
    name: Mapped[str] = mapped_column(String(128))
    allow_negative: Mapped[bool] = mapped_column(Boolean)
    balance_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<Account {self.code} {self.balance_fen}>"


class JournalEntry(Base):
    __tablename__ = "journal_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[EntryKind] = mapped_column(str_enum(EntryKind, length=24))
    idempotency_ref: Mapped[str] = mapped_column(String(128), unique=True)
    order_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    memo: Mapped[str | None] = mapped_column(String(255))
    created_by: Mapped[str | None] = mapped_column(String(64))
    # The service's clock, not the database's: with the embedded sandbox a demo
    # day played on yesterday's date must land in yesterday's statements.
    created_at: Mapped[dt.datetime] = mapped_column(default=clock.now, index=True)
    postings: Mapped[list[Posting]] = relationship(
        back_populates="entry", lazy="selectin", order_by="Posting.id"
    )


class Posting(Base):
    __tablename__ = "postings"
    __table_args__ = (CheckConstraint("amount_fen <> 0", name="non_zero"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    entry: Mapped[JournalEntry] = relationship(back_populates="postings")
    account: Mapped[Account] = relationship(lazy="joined")


ACCOUNTS = Account.__table__
ENTRIES = JournalEntry.__table__
POSTINGS = Posting.__table__

# The statements of posting, built once: every payment runs them, and building
# and hashing a statement anew costs more than the database spends on it.
# Run on the driver (``campus.driver``): every payment posts through these.
_INSERT_ENTRY = DriverStatement(insert(ENTRIES).returning(ENTRIES.c.id))
_CREDIT_STATEMENT = (
    update(ACCOUNTS)
    .where(ACCOUNTS.c.id == bindparam("account"))
    .values(balance_fen=ACCOUNTS.c.balance_fen + bindparam("delta", type_=BigInteger))
    .returning(ACCOUNTS.c.balance_fen)
)
_CREDIT = DriverStatement(_CREDIT_STATEMENT)
# Conditional: under concurrency the row lock makes the second debit re-read the
# balance the first one left, and match nothing if it is too small.
_DEBIT = DriverStatement(
    _CREDIT_STATEMENT.where(
        ACCOUNTS.c.balance_fen >= bindparam("needed", type_=BigInteger)
    )
)
_INSERTS_OF_POSTINGS: dict[int, DriverStatement] = {}


def _insert_postings(count: int) -> DriverStatement:
    """One INSERT of ``count`` postings (``entry_i``, ``account_i``,
    ``amount_i``): a statement, not one per posting."""
    statement = _INSERTS_OF_POSTINGS.get(count)
    if statement is None:
        statement = _INSERTS_OF_POSTINGS[count] = DriverStatement(
            insert(POSTINGS).values(
                [
                    {
                        "entry_id": bindparam(f"entry_{index}", type_=Integer),
                        "account_id": bindparam(f"account_{index}", type_=Integer),
                        "amount_fen": bindparam(f"amount_{index}", type_=BigInteger),
                    }
                    for index in range(count)
                ]
            )
        )
    return statement


_FIND_ENTRY = select(ENTRIES.c.id).where(
    ENTRIES.c.idempotency_ref == bindparam("reference")
)


class AccountRef(NamedTuple):
    """What posting needs of an account, read without loading the ORM object (the
    payment path locks a card and its wallet in one Core query)."""

    id: int
    code: str
    allow_negative: bool


AccountLike = Account | AccountRef


class UnbalancedEntry(ValueError):
    """Postings that do not sum to zero, or fewer than two: a programming error."""


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = lazy_gettext("The same reference was used for a different movement")


class Posted:
    """The entry for an event, and whether this call posted it. The entry itself
    is loaded only when asked for."""

    __slots__ = ("_entry", "_session", "created", "entry_id")

    def __init__(
        self,
        session: Session,
        entry_id: int,
        created: bool,
        entry: JournalEntry | None = None,
    ) -> None:
        self._session = session
        self.entry_id = entry_id
        self.created = created
        self._entry = entry

    @property
    def entry(self) -> JournalEntry:
        if self._entry is None:
            self._entry = self._session.get_one(JournalEntry, self.entry_id)
        return self._entry


def open_account(session: Session, code: str, kind: AccountKind, name: str) -> Account:
    account = Account(
        code=code,
        kind=kind,
        name=name,
        allow_negative=kind not in NON_NEGATIVE_KINDS,
        balance_fen=0,
    )
    session.add(account)
    session.flush()
    return account


def system_account(
    session: Session, code: str, kind: AccountKind, name: str
) -> Account:
    """The account with ``code``, opened on first use. Safe when two transactions
    open it at once: the loser of the unique constraint reads the winner's."""
    account = session.scalar(select(Account).where(Account.code == code))
    if account is not None:
        return account
    try:
        with session.begin_nested():
            return open_account(session, code, kind, name)
    except IntegrityError:
        return session.scalars(select(Account).where(Account.code == code)).one()


def clearing_account(session: Session, channel: str) -> Account:
    return system_account(
        session,
        f"clearing:{channel}",
        AccountKind.CHANNEL_CLEARING,
        f"{channel} clearing",
    )


def fees_account(session: Session, channel: str) -> Account:
    return system_account(
        session, f"fees:{channel}", AccountKind.FEES, f"{channel} fees"
    )


def suspense_account(session: Session) -> Account:
    return system_account(session, "suspense", AccountKind.SUSPENSE, "suspense")


def post_entry(
    session: Session,
    *,
    kind: EntryKind,
    idempotency_ref: str,
    postings: Sequence[tuple[AccountLike, int]],
    order_ref: str | None = None,
    memo: str | None = None,
    created_by: str | None = None,
    savepoint: bool = True,
) -> Posted:
    """Post one journal entry in the caller's transaction, at most once per
    ``idempotency_ref``.

    Raises ``InsufficientFunds`` (and posts nothing) when an account that may not go
    negative would, and ``IdempotencyConflict`` when the reference was already used
    for different postings. The caller commits.

    ``savepoint=False`` spares the savepoint around the entry (two round trips)
    for a caller that rolls its whole transaction back on any exception from here:
    ``InsufficientFunds`` may then leave part of the entry written, and a reference
    already posted raises ``IntegrityError`` instead of returning the first entry.
    The POS wallet payment, whose reference is new, is that caller.
    """
    _check_balanced(postings)
    # No look-up first: a reference already posted fails the entry's unique
    # index (at once, or once its poster commits) and is found below. Nearly
    # every entry is new, so this saves the hot path a round trip.
    deltas: dict[int, int] = defaultdict(int)
    accounts = {}
    for account, amount in postings:
        deltas[account.id] += amount
        accounts[account.id] = account
    # Core statements on the session's connection rather than the unit of work:
    # this is the hot path of every payment, and the ORM's bookkeeping would cost
    # more than the database does.
    connection = session.connection()
    entry = {
        "kind": kind,
        "idempotency_ref": idempotency_ref,
        "order_ref": order_ref,
        "memo": memo,
        "created_by": created_by,
        "created_at": clock.now(),
    }
    if not savepoint:
        entry_id = _write_entry(connection, entry, deltas, accounts, postings)
        _log_posted(entry_id, kind, order_ref, idempotency_ref)
        return Posted(session, entry_id, created=True)
    try:
        with connection.begin_nested():
            entry_id = _write_entry(connection, entry, deltas, accounts, postings)
    except IntegrityError:
        # Either another transaction posted the same event first (its entry is
        # visible now that it has committed), or a constraint refused the change.
        existing = _find_entry(session, idempotency_ref)
        if existing is None:
            raise
        logger.info(
            "entry_already_posted",
            extra={"idempotency_ref": idempotency_ref, "order": order_ref},
        )
        return _replayed(session, existing, postings)

    _log_posted(entry_id, kind, order_ref, idempotency_ref)
    return Posted(session, entry_id, created=True)


def _write_entry(
    connection: Connection,
    entry: dict[str, object],
    deltas: dict[int, int],
    accounts: dict[int, AccountLike],
    postings: Sequence[tuple[AccountLike, int]],
) -> int:
    # The unique reference is taken first: a second poster of the same event
    # waits here, holding no account lock, until the first commits.
    entry_id: int = _INSERT_ENTRY.scalar(connection, entry)
    # Accounts in id order, so that two entries touching the same accounts lock
    # them in the same order and cannot deadlock.
    for account_id in sorted(deltas):
        _apply(connection, accounts[account_id], deltas[account_id])
    values: dict[str, int] = {}
    for index, (account, amount) in enumerate(postings):
        values[f"entry_{index}"] = entry_id
        values[f"account_{index}"] = account.id
        values[f"amount_{index}"] = amount
    _insert_postings(len(postings)).execute(connection, values)
    return entry_id


def _log_posted(
    entry_id: int, kind: EntryKind, order_ref: str | None, idempotency_ref: str
) -> None:
    logger.info(
        "entry_posted",
        extra={
            "entry": entry_id,
            "kind": kind.value,
            "order": order_ref,
            "idempotency_ref": idempotency_ref,
        },
    )


def _check_balanced(postings: Sequence[tuple[AccountLike, int]]) -> None:
    if len(postings) < 2:
        raise UnbalancedEntry("an entry needs at least two postings")
    for _, amount in postings:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise UnbalancedEntry(f"posting amount must be a non-zero int: {amount!r}")
    if sum(amount for _, amount in postings) != 0:
        raise UnbalancedEntry("postings do not sum to zero")


def find_entry_id(session: Session, idempotency_ref: str) -> int | None:
    """The id of the entry posted for an event, if it was."""
    return _find_entry(session, idempotency_ref)


def _find_entry(session: Session, idempotency_ref: str) -> int | None:
    found: int | None = session.connection().scalar(
        _FIND_ENTRY, {"reference": idempotency_ref}
    )
    return found


def _replayed(
    session: Session, entry_id: int, postings: Sequence[tuple[AccountLike, int]]
) -> Posted:
    """The already posted entry, if it moved the same money; else a conflict."""
    wanted = sorted((account.id, amount) for account, amount in postings)
    posted = sorted(
        (account_id, amount)
        for account_id, amount in session.execute(
            select(Posting.account_id, Posting.amount_fen).where(
                Posting.entry_id == entry_id
            )
        )
    )
    if wanted != posted:
        raise IdempotencyConflict(entry=entry_id)
    return Posted(session, entry_id, created=False)


def _apply(connection: Connection, account: AccountLike, delta: int) -> None:
    if delta < 0 and not account.allow_negative:
        balance = _DEBIT.scalar(
            connection, {"account": account.id, "delta": delta, "needed": -delta}
        )
    else:
        balance = _CREDIT.scalar(connection, {"account": account.id, "delta": delta})
    if balance is None:
        logger.info(
            "insufficient_funds",
            extra={"account": account.code, "needed_fen": -delta},
        )
        raise InsufficientFunds(account=account.code)
    if isinstance(account, Account):
        # Keep a loaded object truthful without marking it dirty: a later flush
        # must never write an absolute balance over a concurrent change.
        set_committed_value(account, "balance_fen", balance)


def transfer(
    session: Session,
    *,
    kind: EntryKind,
    idempotency_ref: str,
    source: AccountLike,
    destination: AccountLike,
    amount_fen: int,
    order_ref: str | None = None,
    memo: str | None = None,
    created_by: str | None = None,
    savepoint: bool = True,
) -> Posted:
    """Move ``amount_fen`` from ``source`` to ``destination`` as one entry
    (``savepoint``: see ``post_entry``)."""
    return post_entry(
        session,
        kind=kind,
        idempotency_ref=idempotency_ref,
        postings=[(source, -amount_fen), (destination, amount_fen)],
        order_ref=order_ref,
        memo=memo,
        created_by=created_by,
        savepoint=savepoint,
    )


def reverse_entry(
    session: Session,
    entry: JournalEntry,
    *,
    reason: str,
    created_by: str | None = None,
) -> Posted:
    """Undo ``entry`` with a second entry of the opposite postings; never an edit.
    Reversing twice posts once. Raises ``InsufficientFunds`` when the money has
    already left a wallet since (a merchant payable may go negative)."""
    return post_entry(
        session,
        kind=EntryKind.REVERSAL,
        idempotency_ref=f"reversal:{entry.idempotency_ref}"[:128],
        postings=[(posting.account, -posting.amount_fen) for posting in entry.postings],
        order_ref=entry.order_ref,
        memo=reason[:255],
        created_by=created_by,
    )


# -- proving the ledger ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LedgerProblem:
    account: str | None
    description: str


def check_ledger(session: Session) -> list[LedgerProblem]:
    """Everything wrong with the ledger: the trial balance, entries that do not
    balance, cached balances that differ from their postings, and negative
    balances where none are allowed. An empty list means balanced."""
    problems: list[LedgerProblem] = []

    # int(): PostgreSQL sums a bigint column into a numeric.
    total = int(session.scalar(select(func.coalesce(func.sum(Posting.amount_fen), 0))))
    if total != 0:
        problems.append(LedgerProblem(None, f"trial balance is {total} fen, not 0"))

    unbalanced = session.execute(
        select(Posting.entry_id, func.sum(Posting.amount_fen))
        .group_by(Posting.entry_id)
        .having(func.sum(Posting.amount_fen) != 0)
    ).all()
    for entry_id, amount in unbalanced:
        problems.append(
            LedgerProblem(None, f"entry {entry_id} sums to {int(amount)} fen")
        )

    sums = {
        account_id: int(amount)
        for account_id, amount in session.execute(
            select(Posting.account_id, func.sum(Posting.amount_fen)).group_by(
                Posting.account_id
            )
        )
    }
    # Columns, not entities: objects already in the session could carry balances
    # read before another transaction's commit.
    accounts = session.execute(
        select(
            Account.id, Account.code, Account.balance_fen, Account.allow_negative
        ).order_by(Account.code)
    )
    for account_id, code, cached, allow_negative in accounts:
        posted = sums.get(account_id, 0)
        if cached != posted:
            problems.append(
                LedgerProblem(
                    code, f"cached balance {cached} fen, postings sum to {posted} fen"
                )
            )
        if not allow_negative and cached < 0:
            problems.append(LedgerProblem(code, f"negative balance {cached} fen"))
    return problems


@dataclasses.dataclass(frozen=True)
class StatementLine:
    entry_id: int
    at: dt.datetime
    kind: EntryKind
    order_ref: str | None
    memo: str | None
    amount_fen: int
    balance_fen: int


def statement(
    session: Session, account: Account, limit: int | None = None
) -> list[StatementLine]:
    """The account's postings, newest first, each with the balance after it."""
    rows = session.execute(
        select(Posting, JournalEntry)
        .join(JournalEntry, Posting.entry_id == JournalEntry.id)
        .where(Posting.account_id == account.id)
        .order_by(Posting.id.desc())
        .limit(limit)
    ).all()
    balance = account.balance_fen
    lines = []
    for posting, entry in rows:
        lines.append(
            StatementLine(
                entry_id=entry.id,
                at=entry.created_at,
                kind=entry.kind,
                order_ref=entry.order_ref,
                memo=entry.memo,
                amount_fen=posting.amount_fen,
                balance_fen=balance,
            )
        )
        balance -= posting.amount_fen
    return lines


def accounts_by_code(session: Session, codes: Iterable[str]) -> dict[str, Account]:
    return {
        account.code: account
        for account in session.scalars(select(Account).where(Account.code.in_(codes)))
    }
