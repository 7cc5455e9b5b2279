"""A Core statement run on the driver does what ``Connection.execute`` would: the
same rows, types processed, plain defaults filled in, the session's transaction,
SQLAlchemy's errors; on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from campus.driver import DriverStatement, MissingValue
from payments.ledger import EntryKind, JournalEntry
from payments.pos.models import PaymentSource, PaymentState, PosPayment

ENTRIES = JournalEntry.__table__
PAYMENTS = PosPayment.__table__
NOON = dt.datetime(2031, 6, 1, 4, tzinfo=dt.UTC)

_ADD_ENTRY = DriverStatement(insert(ENTRIES).returning(ENTRIES.c.id))
_ENTRY = DriverStatement(
    select(ENTRIES.c.kind, ENTRIES.c.memo).where(
        ENTRIES.c.idempotency_ref == bindparam("reference")
    )
)


def _entry(reference: str, **more) -> dict:  # type: ignore[no-untyped-def]
    return {
        "kind": EntryKind.PAYMENT,
        "idempotency_ref": reference,
        "created_at": NOON,
        **more,
    }


def test_a_row_written_on_the_driver_reads_back_through_the_orm(session) -> None:
    connection = session.connection()

    entry_id = _ADD_ENTRY.scalar(connection, _entry("driver:1", memo="备注 memo"))
    session.commit()

    written = session.get_one(JournalEntry, entry_id)
    assert (written.kind, written.memo, written.created_at) == (
        EntryKind.PAYMENT,
        "备注 memo",
        NOON,
    )
    # The enum went in as its value: read raw, it is that text.
    assert _ENTRY.first(session.connection(), {"reference": "driver:1"}) == (
        "payment",
        "备注 memo",
    )


def test_the_driver_writes_in_the_sessions_transaction(session) -> None:
    _ADD_ENTRY.scalar(session.connection(), _entry("driver:undone"))

    session.rollback()

    assert _ENTRY.first(session.connection(), {"reference": "driver:undone"}) is None


def test_a_duplicate_is_sqlalchemys_integrity_error(session) -> None:
    _ADD_ENTRY.scalar(session.connection(), _entry("driver:twice"))

    with pytest.raises(IntegrityError):
        _ADD_ENTRY.scalar(session.connection(), _entry("driver:twice"))
    session.rollback()


def test_plain_defaults_are_filled_in_and_computed_ones_must_be_given(
    session, merchant
) -> None:
    payment = {
        "out_trade_no": "P-driver-1",
        "merchant_id": merchant.id,
        "request_hash": "h" * 64,
        "source": PaymentSource.TAP,
        "channel": "campus",
        "amount_fen": 100,
        "state": PaymentState.SUCCEEDED,
        "description": "driver",
    }
    add = DriverStatement(insert(PAYMENTS).returning(PAYMENTS.c.id))

    with pytest.raises(MissingValue, match="created_at"):
        add.scalar(session.connection(), payment)
    payment_id = add.scalar(session.connection(), {**payment, "created_at": NOON})
    session.commit()

    written = session.get_one(PosPayment, payment_id)
    # refunded_fen and needs_review have plain defaults (0, False).
    assert (written.refunded_fen, written.needs_review) == (0, False)
    assert (written.source, written.state) == (
        PaymentSource.TAP,
        PaymentState.SUCCEEDED,
    )


def test_a_statement_that_renders_at_execution_is_refused(session) -> None:
    expanding = DriverStatement(
        select(ENTRIES.c.id).where(
            ENTRIES.c.idempotency_ref.in_(bindparam("references", expanding=True))
        )
    )

    with pytest.raises(ValueError, match="renders at execution"):
        expanding.first(session.connection(), {"references": ["a", "b"]})


def test_values_sqlalchemy_would_add_itself_are_refused(session) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, update

    table = Table(
        "made_up",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("count", Integer, default=7),
        Column("touched", Integer, onupdate=1),
    )
    several = DriverStatement(insert(table).values([{"id": 1}, {"id": 2}]))
    touching = DriverStatement(update(table).values(count=2))

    with pytest.raises(MissingValue, match="made_up.count"):
        several.execute(session.connection())
    with pytest.raises(MissingValue, match="made_up.touched"):
        touching.execute(session.connection())


@pytest.mark.postgres
def test_a_lost_connection_is_invalidated_as_sqlalchemy_would(database_url) -> None:
    import gc

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from campus.database import make_engine

    # Engines of their own: the connection lost is none of the suite's.
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    killer = make_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with killer.connect() as other:
                other.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}
                )

            with pytest.raises(OperationalError) as lost:
                _ENTRY.first(connection, {"reference": "driver:lost"})
            invalidated = lost.value.connection_invalidated
            del lost
        with engine.connect() as again:
            # The pool hands out a connection that works.
            assert _ENTRY.first(again, {"reference": "driver:lost"}) is None
    finally:
        engine.dispose()
        killer.dispose()
        gc.collect()

    assert invalidated
