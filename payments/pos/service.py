"""POS payments: pay by code or card tap, wait for the payer, reverse, query, settle.

One payment, start to end::

    the code picks the channel (``routing``)
    campus / tap ──► the PIN if needed; then one transaction: remember the
                     nonce, use the code, check the card, debit the wallet to
                     the merchant's payable, record the payment ──► answer
                     (refused: all of it rolled back, then the nonce and the
                     failed payment recorded in a second transaction)
    wechat/alipay ─► record ``paying`` and commit ──► pay_with_code
                     ├─ paid ─────────────► settle (clearing → payable)
                     ├─ refused ──────────► failed, with the channel's reason
                     └─ paying / timeout ─► query every few seconds until the
                        deadline (45 s); paid → settle; still unknown → reverse
                        (WeChat) / cancel (Alipay, repeated while retry_flag Y)

With ``respond_async`` (the terminal's ``Prefer: respond-async``), a payer entering
the password is answered at once, still ``paying``, and the same wait runs in a
thread of this process (``BackgroundWaits``); when every thread is taken the request
waits itself, as without the preference.

A timeout or 5xx is never answered as ``failed``: only a query showing the payment
failed, or a completed reverse, ends a payment unpaid. No transaction is held open
across a channel call. ``settle_payment`` is the one way to ``succeeded``; the
notification endpoints, queries and the stale-payment job all go through it, and it
locks the payment row first, so two of them settle once.

The same terminal order number or ``Idempotency-Key`` returns the first payment:
the unique constraints on ``pos_payments`` make the second insert wait for the
first and fail, and the loser answers with the winner's payment (the same body is
required, by hash). ``resolve_stale`` is the job that finishes payments a crashed
process left paying.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, current_app
from flask_babel import lazy_gettext
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campus.database import db, utcnow
from campus.driver import DriverStatement
from campus.errors import CampusError, Conflict, InvalidAmount, InvalidInput, NotFound
from campus.logs import mask_code
from payments import ledger
from payments.cards import Card
from payments.channel_log import recorded_call
from payments.channels import channel_for
from payments.channels.base import (
    ChannelError,
    ChannelRejected,
    Checkout,
    OrderRequest,
    PayerContext,
    PaymentResult,
    TradeState,
)
from payments.channels.campus import codes, pin
from payments.ledger import AccountRef
from payments.merchants import Merchant, payable_of
from payments.notifications import notify_url
from payments.orders import SettleOutcome
from payments.pos.config import pos_config
from payments.pos.models import (
    PaymentSource,
    PaymentState,
    PosPayment,
    PosRefund,
    RefundState,
)
from payments.pos.routing import channel_of
from payments.pos.terminal_auth import SignedBy
from payments.wallet import pay_from_wallet

logger = logging.getLogger(__name__)

DESCRIPTION = "食堂消费 Canteen payment"
CHANNELS = ("wechat", "alipay")
QR_ORDER_MINUTES = 15


class PaymentNotFound(NotFound):
    code = "payment_not_found"
    title = lazy_gettext("No such payment")


class IdempotencyMismatch(Conflict):
    status = 422
    code = "idempotency_mismatch"
    title = lazy_gettext(
        "This order number or Idempotency-Key was used with a different request"
    )


class QrOrderClosed(Conflict):
    code = "qr_order_closed"
    title = lazy_gettext("This order can no longer be paid")


def request_digest(content: bytes) -> str:
    """What a payment keeps of the request that made it, so that the same order
    number (or ``Idempotency-Key``) with another body is refused: an HMAC-SHA256
    under a key derived from the application's secret. A plain hash would not
    do: beside it are kept the order number, the amount and the code's first
    four and last two digits, which leave a dozen digits to find by trying them
    all. Rows written before the digest was keyed hold a plain SHA-256, and a
    repeat of such a request is refused as another body (the terminal then asks
    for its order with ``query``)."""
    secret = current_app.secret_key or ""
    if isinstance(secret, str):
        secret = secret.encode()
    key = hmac.new(secret, b"campus pos request digest", hashlib.sha256).digest()
    return hmac.new(key, content, hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class PayRequest:
    order_no: str
    amount_fen: int
    body_hash: str
    """``request_digest`` of the request as the terminal sent it."""
    code: str | None = None
    card_number: str | None = None
    pin: str | None = None
    idempotency_key: str | None = None
    description: str = DESCRIPTION
    respond_async: bool = False
    """Answer a payer entering the password at once and wait for them in a thread
    (``Prefer: respond-async``); not part of what idempotency compares."""


@dataclasses.dataclass(frozen=True)
class Taken:
    """What ``take_payment`` answers from."""

    payment: PosPayment
    in_background: bool = False
    """The payer is entering the password and a thread of this process is waiting
    for them: the answer is the payment as it stood when the thread started."""


def new_out_trade_no(now: dt.datetime, prefix: str = "P") -> str:
    # P + UTC second + 10 hex digits: 25 characters, within WeChat's 6–32.
    return (
        prefix + now.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(5)
    )


@contextlib.contextmanager
def writing() -> Iterator[Session]:
    """``db.transaction()`` after ending any read the thread's session still has
    open: on SQLite (WAL) a read snapshot older than another connection's commit,
    such as a channel call's record, cannot become a write."""
    db.session.rollback()
    with db.transaction() as session:
        yield session


def find_payment(session: Session, out_trade_no: str) -> PosPayment:
    payment = session.scalar(
        select(PosPayment).where(PosPayment.out_trade_no == out_trade_no)
    )
    if payment is None:
        raise PaymentNotFound(out_trade_no=out_trade_no)
    return payment


def lock_payment(session: Session, out_trade_no: str) -> PosPayment:
    payment = session.scalar(
        select(PosPayment)
        .where(PosPayment.out_trade_no == out_trade_no)
        .with_for_update(of=PosPayment)
        .execution_options(populate_existing=True)
    )
    if payment is None:
        raise PaymentNotFound(out_trade_no=out_trade_no)
    return payment


def terminal_payment(session: Session, terminal_id: int, order_no: str) -> PosPayment:
    payment = session.scalar(
        select(PosPayment).where(
            PosPayment.terminal_id == terminal_id,
            PosPayment.terminal_order_no == order_no,
        )
    )
    if payment is None:
        raise PaymentNotFound(order_no=order_no)
    return payment


# -- paying ------------------------------------------------------------------------


def pay(terminal: SignedBy, request: PayRequest) -> PosPayment:
    """Take a payment at a terminal and return it in its state at the end: the
    caller answers from it. Raises only for requests refused before any payment
    exists (bad amount, unrecognised code, PIN needed or wrong)."""
    return take_payment(terminal, request).payment


def take_payment(terminal: SignedBy, request: PayRequest) -> Taken:
    """``pay``, saying whether the wait for the payer went to a background thread
    (only with ``request.respond_async``)."""
    if request.amount_fen <= 0:
        raise InvalidAmount(lazy_gettext("The amount must be above zero."))
    if bool(request.code) == bool(request.card_number):
        raise InvalidInput(lazy_gettext("Send either a payment code or a card number."))
    config = pos_config()
    now = config.now()
    terminal_id, key_id = terminal.id, terminal.key_id

    # No lookup first: the insert's unique constraints find a repeated order
    # number or key (``_insert_or_existing``), one round trip fewer for the rest.
    channel = "campus" if request.card_number else channel_of(request.code or "")
    out_trade_no = new_out_trade_no(now)
    payment = PosPayment(
        out_trade_no=out_trade_no,
        merchant_id=terminal.merchant_id,
        terminal_id=terminal_id,
        terminal_order_no=request.order_no,
        idempotency_key=request.idempotency_key,
        request_hash=request.body_hash,
        source=PaymentSource.TAP if request.card_number else PaymentSource.CODE,
        channel=channel,
        code_masked=mask_code(request.code) if request.code else None,
        amount_fen=request.amount_fen,
        refunded_fen=0,
        state=PaymentState.PAYING,
        description=request.description[:64],
        created_at=now,
        deadline_at=now + dt.timedelta(seconds=config.poll_deadline_seconds),
    )
    log = {
        "out_trade_no": out_trade_no,
        "terminal": key_id,
        "channel": channel,
        "amount_fen": request.amount_fen,
    }
    if request.code:
        log["code"] = mask_code(request.code)
    logger.info("pos_payment_started", extra=log)
    if channel == "campus":
        return Taken(_pay_from_wallet(payment, request, terminal, now))
    return _pay_through_channel(payment, request, terminal, now)


def _existing(
    session: Session, terminal_id: int, request: PayRequest
) -> PosPayment | None:
    condition = PosPayment.terminal_order_no == request.order_no
    if request.idempotency_key:
        condition = condition | (PosPayment.idempotency_key == request.idempotency_key)
    found = session.scalars(
        select(PosPayment).where(PosPayment.terminal_id == terminal_id, condition)
    ).all()
    if not found:
        return None
    for payment in found:
        if payment.request_hash != request.body_hash:
            raise IdempotencyMismatch(
                order_no=request.order_no, out_trade_no=payment.out_trade_no
            )
    logger.info(
        "pos_payment_replayed",
        extra={"out_trade_no": found[0].out_trade_no, "order_no": request.order_no},
    )
    return found[0]


def _insert_or_existing(
    payment: PosPayment, request: PayRequest, terminal: SignedBy | None = None
) -> PosPayment | None:
    """Commit a new ``paying`` payment, with the terminal's nonce; ``None`` when
    it is ours, else the one a concurrent request with the same order number or
    key inserted first."""
    try:
        with writing() as session:
            if terminal is not None:
                terminal.remember_nonce(session)
            session.add(payment)
    except IntegrityError:
        # Our nonce went with the rollback: a replay of this request is refused.
        if terminal is not None:
            terminal.forget_nonce()
            terminal.remember_nonce_now()
        existing = _existing(db.session(), payment.terminal_id or 0, request)
        assert existing is not None
        return existing
    return None


def _card_id_for(session: Session, request: PayRequest, now: dt.datetime) -> int:
    if request.code:
        return codes.card_of(session, request.code, now=now)
    card_id = session.scalar(select(Card.id).where(Card.number == request.card_number))
    if card_id is None:
        from payments.cards import CardNotFound

        raise CardNotFound(lazy_gettext("No such card."))
    return card_id


def _pay_from_wallet(
    payment: PosPayment,
    request: PayRequest,
    terminal: SignedBy,
    now: dt.datetime,
) -> PosPayment:
    config = pos_config()
    payable, key_id = terminal.payable, terminal.key_id
    if request.amount_fen > config.pin_above_fen:
        # Checked before anything is recorded or the code used, so that the
        # terminal can ask for the PIN and send the same order again. The count
        # of wrong tries is committed even when the check raises, so the nonce
        # is remembered first: a replayed wrong PIN is not counted twice.
        terminal.remember_nonce_now()
        session = db.session()
        existing = _existing(session, payment.terminal_id or 0, request)
        if existing is not None:
            return existing
        try:
            card_id = _card_id_for(session, request, now)
            pin.check_pin(session, card_id, request.pin, now)
        finally:
            session.commit()

    out_trade_no = payment.out_trade_no
    try:
        with writing() as session:
            # The nonce in the payment's transaction: a replay waits here for
            # this one to commit, then is refused (``SignatureRefused``).
            terminal.remember_nonce(session)
            try:
                tapped = _debit_wallet(session, payment, request, payable, key_id, now)
            except CampusError as refusal:
                # Refused by the card, the code or the wallet. The debit runs
                # without savepoints (four round trips fewer on every payment),
                # so it may have written part of its entry or used the code:
                # all of it is rolled back, and the refusal is recorded with
                # the nonce in a transaction of its own.
                session.rollback()
                terminal.forget_nonce()
                terminal.remember_nonce(session)
                payment.state = PaymentState.FAILED
                payment.failure_code = refusal.code
                payment.failure_message = str(refusal.detail)[:255]
                payment.finished_at = now
                tapped = None
            # The payment is inserted once, with its outcome, after the debit: a
            # second request with the same order number waits on the unique
            # index for this transaction, then fails on it, and its own debit
            # is rolled back with it (``IntegrityError`` below).
            _insert_payment(session, payment, tapped_card=tapped)
    except IntegrityError:
        db.session.rollback()
        # Our nonce went with the rollback: a replay of this request is refused.
        terminal.forget_nonce()
        terminal.remember_nonce_now()
        existing = _existing(db.session(), payment.terminal_id or 0, request)
        assert existing is not None
        return existing
    if payment.state is PaymentState.SUCCEEDED:
        logger.info("pos_payment_succeeded", extra={"out_trade_no": out_trade_no})
    else:
        logger.info(
            "pos_payment_refused",
            extra={"out_trade_no": out_trade_no, "code": payment.failure_code},
        )
    return payment


_PAYMENTS = PosPayment.__table__
_CARDS = Card.__table__
_PAYMENT_COLUMNS = tuple(column.key for column in _PAYMENTS.columns)
# Core, not the unit of work: the payment is written once and answered from the
# object, never loaded back; building the statement once saves a tenth of the
# payment's CPU. A tapped card's id comes from its number inside the INSERT.
# Run on the driver (``campus.driver``).
_INSERT_PAYMENT = DriverStatement(insert(_PAYMENTS).returning(_PAYMENTS.c.id))
_INSERT_TAPPED_PAYMENT = DriverStatement(
    insert(_PAYMENTS)
    .values(
        card_id=select(_CARDS.c.id)
        .where(_CARDS.c.number == bindparam("tapped_card"))
        .scalar_subquery()
    )
    .returning(_PAYMENTS.c.id)
)


def _insert_payment(
    session: Session, payment: PosPayment, *, tapped_card: str | None
) -> None:
    """INSERT the (transient) payment as it stands; the columns it leaves unset
    get their defaults."""
    state = payment.__dict__
    values = {key: state[key] for key in _PAYMENT_COLUMNS if key in state}
    statement = _INSERT_PAYMENT
    if tapped_card is not None:
        statement = _INSERT_TAPPED_PAYMENT
        values["tapped_card"] = tapped_card
    payment.id = statement.scalar(session.connection(), values)


def _debit_wallet(
    session: Session,
    payment: PosPayment,
    request: PayRequest,
    payable: AccountRef,
    key_id: str,
    now: dt.datetime,
) -> str | None:
    """Pay ``payment`` from the wallet of the tapped card or the code's card and
    mark it succeeded; the tapped card's number, whose id the payment's INSERT
    looks up. A ``CampusError`` may leave writes behind: the caller rolls back."""
    tapped = None
    if request.code:
        payment.card_id = codes.redeem(
            session, request.code, now=now, out_trade_no=payment.out_trade_no
        )
        number = session.scalar(select(Card.number).where(Card.id == payment.card_id))
        assert number is not None
    else:
        number = tapped = request.card_number or ""
    posted = pay_from_wallet(
        session,
        number,
        payable,
        payment.amount_fen,
        idempotency_ref=f"pos:{payment.out_trade_no}",
        order_ref=payment.out_trade_no,
        memo=f"campus {mask_code(number)}",
        created_by=f"terminal:{key_id}",
        savepoint=False,
    )
    payment.state = PaymentState.SUCCEEDED
    payment.entry_id = posted.entry_id
    payment.paid_at = payment.finished_at = now
    return tapped


def _pay_through_channel(
    payment: PosPayment, request: PayRequest, terminal: SignedBy, now: dt.datetime
) -> Taken:
    channel_name = payment.channel or ""
    out_trade_no = payment.out_trade_no
    deadline = payment.deadline_at or now
    # The live request owns the payment until a minute past its deadline; the
    # stale-payment job takes it only after that (the request's process died).
    payment.claimed_until = deadline + dt.timedelta(seconds=60)
    existing = _insert_or_existing(payment, request, terminal)
    if existing is not None:
        # A replay, even while a thread waits for this payment's payer: the
        # payment as it stands, and no second wait.
        return Taken(existing)

    order = OrderRequest(
        out_trade_no=out_trade_no,
        amount_fen=payment.amount_fen,
        description=payment.description,
        notify_url=notify_url(channel_name),
    )
    channel = channel_for(channel_name)
    result: PaymentResult | None = None
    try:
        with recorded_call(
            channel_name,
            "pay_with_code",
            out_trade_no,
            {**dataclasses.asdict(order), "auth_code": request.code},
        ) as call:
            result = channel.pay_with_code(order, request.code or "")
            call.response = result.raw
    except ChannelRejected as refused:
        _finish(
            out_trade_no,
            PaymentState.FAILED,
            refused.error_code or "channel_refused",
            str(refused),
        )
        return Taken(find_payment(db.session(), out_trade_no))
    except ChannelError as unknown:
        # Timeout, 5xx, SYSTEMERROR or a bad signature: the money may have moved.
        logger.warning(
            "pos_payment_unknown",
            extra={"out_trade_no": out_trade_no, "error": type(unknown).__name__},
        )

    if result is not None and result.state is TradeState.SUCCEEDED:
        _settle(channel_name, result, via="pay")
    elif result is not None and result.state is TradeState.FAILED:
        _finish(
            out_trade_no,
            PaymentState.FAILED,
            result.error_code or "failed",
            result.error_message or "",
        )
    elif (
        request.respond_async
        and result is not None
        and result.state is TradeState.PAYING
    ):
        # Read before the thread starts, so that the answer is the ``paying``
        # the cashier asked for, whatever the thread does next.
        answer = find_payment(db.session(), out_trade_no)
        if _wait_in_background(channel_name, out_trade_no, deadline):
            return Taken(answer, in_background=True)
        _wait_for_payer(channel_name, out_trade_no, deadline)
    else:
        _wait_for_payer(channel_name, out_trade_no, deadline)
    return Taken(find_payment(db.session(), out_trade_no))


# -- waiting for the payer in the background ---------------------------------------

BACKGROUND_WAITS = 32
"""Threads one app keeps waiting for payers at once. A waiting thread holds no
database connection while it sleeps, only a stack; the bound keeps a lunch-time
burst of password payments from growing threads without end."""


class BackgroundWaits:
    """The threads of one app waiting for payers after a ``respond-async`` answer:
    at most one per payment and ``limit`` in all. They are kept so that a test (or
    a shutdown) can join them instead of guessing how long they take. A thread
    lost with its process leaves the payment ``paying`` with its lease, and the
    stale-payment job finishes it once the lease has run out."""

    def __init__(self, limit: int = BACKGROUND_WAITS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def start(self, out_trade_no: str, work: Callable[[], None]) -> bool:
        """Run ``work`` in a thread of its own; ``False`` (and nothing run) when
        this payment already has one or every thread is taken."""
        with self._lock:
            if out_trade_no in self._threads or len(self._threads) >= self.limit:
                return False
            thread = threading.Thread(
                target=self._run,
                args=(out_trade_no, work),
                name=f"pos-wait-{out_trade_no}",
                # A process stopping does not wait up to 45 s per payment: the
                # stale-payment job is there for what it leaves behind.
                daemon=True,
            )
            self._threads[out_trade_no] = thread
            thread.start()
        return True

    def _run(self, out_trade_no: str, work: Callable[[], None]) -> None:
        try:
            work()
        finally:
            with self._lock:
                self._threads.pop(out_trade_no, None)

    def running(self) -> list[str]:
        """The payments (``out_trade_no``) still waited for."""
        with self._lock:
            return sorted(self._threads)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads running now to end, each for at most ``timeout``
        seconds; whether they all have."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in threads)


_WAITS_CREATED = threading.Lock()


def background_waits(app: Flask | None = None) -> BackgroundWaits:
    """The app's ``BackgroundWaits``, made on first use."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    waits = app.extensions.get("payments.pos.waits")
    if waits is None:
        with _WAITS_CREATED:
            waits = app.extensions.setdefault("payments.pos.waits", BackgroundWaits())
    return waits  # type: ignore[no-any-return]


def _wait_in_background(
    channel_name: str, out_trade_no: str, deadline: dt.datetime
) -> bool:
    """Hand ``_wait_for_payer`` to a thread with its own app context (and so its
    own database session); whether one took it."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def work() -> None:
        with app.app_context():
            try:
                _wait_for_payer(channel_name, out_trade_no, deadline)
            except Exception:
                # Left ``paying`` under the request's lease: the stale-payment
                # job queries and finishes it once the lease runs out.
                logger.exception(
                    "pos_background_wait_failed", extra={"out_trade_no": out_trade_no}
                )

    waits = background_waits(app)
    if not waits.start(out_trade_no, work):
        logger.warning(
            "pos_background_waits_full",
            extra={"out_trade_no": out_trade_no, "limit": waits.limit},
        )
        return False
    logger.info(
        "pos_payment_waiting_in_background", extra={"out_trade_no": out_trade_no}
    )
    return True


def _query(channel_name: str, out_trade_no: str) -> PaymentResult:
    with recorded_call(channel_name, "query", out_trade_no) as call:
        result = channel_for(channel_name).query(out_trade_no)
        call.response = result.raw
    return result


def _settle(channel_name: str, result: PaymentResult, via: str) -> SettleOutcome:
    with writing() as session:
        return settle_payment(session, channel_name, result, via=via)


def _apply_query(channel_name: str, result: PaymentResult) -> bool:
    """Act on a query's answer; whether the payment's outcome is now known."""
    if result.state is TradeState.SUCCEEDED:
        _settle(channel_name, result, via="query")
        return True
    if result.state is TradeState.FAILED:
        _finish(
            result.out_trade_no,
            PaymentState.FAILED,
            result.error_code or "failed",
            result.error_message or "the channel says the payment failed",
        )
        return True
    if result.state in {TradeState.CLOSED, TradeState.REVERSED}:
        _finish(result.out_trade_no, PaymentState.REVERSED, result.state.value, "")
        return True
    return False


def _wait_for_payer(
    channel_name: str, out_trade_no: str, deadline: dt.datetime
) -> None:
    """Query until the outcome is known or the deadline passes; then reverse."""
    config = pos_config()
    while config.now() < deadline:
        config.sleep(config.poll_interval_seconds)
        if not _still_paying(out_trade_no):
            # A notification settled it while we waited (our queries may be
            # failing): the money is ours, and the wait is over.
            return
        try:
            result = _query(channel_name, out_trade_no)
        except ChannelError:
            continue
        if _apply_query(channel_name, result):
            return
    reverse_payment(channel_name, out_trade_no)


def _still_paying(out_trade_no: str) -> bool:
    """Whether our record of the payment is still ``paying`` (read afresh)."""
    db.session.rollback()
    state = db.session.scalar(
        select(PosPayment.state).where(PosPayment.out_trade_no == out_trade_no)
    )
    db.session.commit()
    return state is PaymentState.PAYING


def reverse_payment(channel_name: str, out_trade_no: str) -> bool:
    """Reverse (WeChat) or cancel (Alipay) a code payment whose outcome we could
    not learn, repeating while the channel says to; whether it is done. A payment
    left undone stays ``paying`` for the stale-payment job. One a notification
    has settled meanwhile is not reversed: the payer paid, and refunds of it may
    already have gone back through the channel."""
    config = pos_config()
    channel = channel_for(channel_name)
    if not _still_paying(out_trade_no):
        logger.info("pos_reverse_not_needed", extra={"out_trade_no": out_trade_no})
        return True
    for attempt in range(config.reverse_attempts):
        try:
            with recorded_call(channel_name, "reverse", out_trade_no) as call:
                answer = channel.reverse(out_trade_no)
                call.response = answer.raw
        except ChannelRejected:
            # Refused outright: ask what the payment became instead.
            try:
                result = _query(channel_name, out_trade_no)
            except ChannelError:
                return False
            return _apply_query(channel_name, result)
        except ChannelError:
            config.sleep(config.poll_interval_seconds)
            continue
        if answer.done:
            _finish(
                out_trade_no,
                PaymentState.REVERSED,
                "reversed",
                f"no answer by the deadline; {answer.action or 'reversed'}",
            )
            return True
        logger.info(
            "pos_reverse_retry",
            extra={"out_trade_no": out_trade_no, "attempt": attempt},
        )
        config.sleep(config.poll_interval_seconds)
    logger.warning("pos_reverse_unfinished", extra={"out_trade_no": out_trade_no})
    return False


def _finish(out_trade_no: str, state: PaymentState, code: str, message: str) -> None:
    """End a payment unpaid. A payment a notification settled meanwhile and the
    channel then reversed gets its entry reversed too, and is flagged."""
    now = pos_config().now()
    with writing() as session:
        payment = lock_payment(session, out_trade_no)
        if payment.state is PaymentState.SUCCEEDED and state is PaymentState.REVERSED:
            if payment.entry_id is not None:
                _reverse_what_was_left(session, payment)
            payment.needs_review = True
            payment.review_reason = "settled, then reversed at the deadline"
        elif payment.state not in {PaymentState.PAYING, PaymentState.AWAITING}:
            return
        payment.state = state
        payment.failure_code = code[:64]
        payment.failure_message = message[:255] or None
        payment.finished_at = now
        payment.claimed_until = None
    logger.info(
        "pos_payment_finished", extra={"out_trade_no": out_trade_no, "state": state}
    )


def _reverse_what_was_left(session: Session, payment: PosPayment) -> None:
    """Book a reverse or cancel of a payment we had settled: the channel gave
    back what it still held, the amount less the refunds it had already made
    (each booked by its own entry), so that much of the payment's entry is
    undone, the same accounts the other way."""
    entry = session.get_one(ledger.JournalEntry, payment.entry_id)
    refunded = session.scalar(
        select(func.coalesce(func.sum(PosRefund.amount_fen), 0)).where(
            PosRefund.payment_id == payment.id,
            PosRefund.state == RefundState.SUCCEEDED,
        )
    )
    left = payment.amount_fen - int(refunded or 0)
    if left <= 0:
        return
    memo = "code payment reversed at the channel"
    if refunded:
        memo += f"; {refunded} fen refunded before"
    ledger.post_entry(
        session,
        kind=ledger.EntryKind.REVERSAL,
        idempotency_ref=f"reversal:{entry.idempotency_ref}"[:128],
        # The entry moved the amount from clearing to the payable.
        postings=[
            (posting.account, -left if posting.amount_fen > 0 else left)
            for posting in entry.postings
        ],
        order_ref=entry.order_ref,
        memo=memo,
        created_by="pos",
    )


def settle_payment(
    session: Session,
    channel: str,
    result: PaymentResult,
    *,
    via: str,
    now: dt.datetime | None = None,
) -> SettleOutcome:
    """Settle a POS payment the channel says was paid: the one way to
    ``succeeded``. Posts channel clearing → merchant payable in the caller's
    transaction, once; the payment row is locked first."""
    now = now or utcnow()
    payment = lock_payment(session, result.out_trade_no)
    log = {"out_trade_no": payment.out_trade_no, "via": via, "channel": channel}
    if result.state is not TradeState.SUCCEEDED:
        return SettleOutcome.NOT_PAID
    if payment.channel != channel:
        return flag_payment(
            payment, f"paid through {channel}, opened for {payment.channel}", log
        )
    if result.amount_fen != payment.amount_fen:
        return flag_payment(
            payment,
            f"channel says {result.amount_fen} fen, payment is {payment.amount_fen}",
            log,
        )
    if payment.state is PaymentState.SUCCEEDED:
        if payment.transaction_id != result.transaction_id:
            return flag_payment(
                payment, f"second transaction {result.transaction_id}", log
            )
        return SettleOutcome.ALREADY
    if payment.state is not PaymentState.PAYING:
        return flag_payment(
            payment, f"paid after the payment was {payment.state.value}", log
        )

    merchant = session.get_one(Merchant, payment.merchant_id)
    posted = ledger.transfer(
        session,
        kind=ledger.EntryKind.PAYMENT,
        idempotency_ref=f"pos:{payment.out_trade_no}",
        source=ledger.clearing_account(session, channel),
        destination=merchant.payable,
        amount_fen=payment.amount_fen,
        order_ref=payment.out_trade_no,
        memo=f"{channel} {result.transaction_id}",
        created_by=via,
    )
    payment.state = PaymentState.SUCCEEDED
    payment.transaction_id = result.transaction_id
    payment.paid_at = result.paid_at or now
    payment.finished_at = now
    payment.entry_id = posted.entry_id
    payment.claimed_until = None
    session.flush()
    logger.info("pos_payment_settled", extra={**log, "amount_fen": payment.amount_fen})
    return SettleOutcome.CREDITED


def flag_payment(
    payment: PosPayment, reason: str, log: dict[str, Any]
) -> SettleOutcome:
    """Put the payment on finance's list of flagged orders, saying why."""
    payment.needs_review = True
    payment.review_reason = reason[:255]
    logger.warning("pos_payment_flagged", extra={**log, "reason": reason})
    return SettleOutcome.FLAGGED


def refresh(out_trade_no: str) -> PosPayment:
    """The payment, asking the channel first while it is still paying (the
    terminal's ``query``). Never reverses: the paying request or the job does."""
    payment = find_payment(db.session(), out_trade_no)
    channel_name = payment.channel
    if payment.state is not PaymentState.PAYING or channel_name not in CHANNELS:
        return payment
    db.session.rollback()
    try:
        _apply_query(channel_name, _query(channel_name, out_trade_no))
    except ChannelError:
        pass  # still unknown: the terminal asks again, the job stands behind it
    return find_payment(db.session(), out_trade_no)


# -- the stale-payment job ---------------------------------------------------------


@dataclasses.dataclass
class ResolveReport:
    settled: int = 0
    failed: int = 0
    reversed: int = 0
    unknown: int = 0
    expired: int = 0


def resolve_stale(now: dt.datetime | None = None) -> ResolveReport:
    """Finish payments a crashed process left ``paying``: query, then settle, fail
    or reverse (code payments) / close (QR orders). Safe on two machines at once:
    payments are claimed with a lease before the channel is asked."""
    from payments.pos.terminal_auth import prune_nonces

    config = pos_config()
    now = now or config.now()
    report = ResolveReport()
    with writing() as session:
        numbers = _claim_stale(session, now, config.stale_after_seconds)
        report.expired = _expire_awaiting(session, now)
    for number in numbers:
        payment = find_payment(db.session(), number)
        channel_name, source = payment.channel or "", payment.source
        db.session.rollback()
        try:
            result = _query(channel_name, number)
            if _apply_query(channel_name, result):
                state = find_payment(db.session(), number).state
                report.settled += state is PaymentState.SUCCEEDED
                report.failed += state is PaymentState.FAILED
                report.reversed += state is PaymentState.REVERSED
                continue
            if source is PaymentSource.QR:
                if result.state is not TradeState.NOT_FOUND:
                    with recorded_call(channel_name, "close", number):
                        channel_for(channel_name).close(number)
                _finish(number, PaymentState.FAILED, "expired", "not paid in time")
                report.failed += 1
            elif reverse_payment(channel_name, number):
                report.reversed += 1
            else:
                report.unknown += 1
        except ChannelError as error:
            logger.warning(
                "pos_resolve_unknown",
                extra={"out_trade_no": number, "error": type(error).__name__},
            )
            report.unknown += 1
    prune_nonces(now)
    if numbers or report.expired:
        logger.info("pos_payments_resolved", extra=dataclasses.asdict(report))
    return report


def _claim_stale(session: Session, now: dt.datetime, after_seconds: int) -> list[str]:
    lease = dt.timedelta(minutes=2)
    candidates = session.scalars(
        select(PosPayment.id)
        .where(
            PosPayment.state == PaymentState.PAYING,
            PosPayment.channel.in_(CHANNELS),
            # Flagged: the channel reported a payment we would not take as it
            # stands, and finance decides; asked again, it would only be flagged
            # again, and enough of them would starve the later ones.
            PosPayment.needs_review.is_(False),
            PosPayment.created_at <= now - dt.timedelta(seconds=after_seconds),
            # A QR order's payer has the QR's whole life to pay: one who scanned
            # late may still be typing the password when a code payment would
            # long since be stale.
            (PosPayment.source != PaymentSource.QR)
            | (PosPayment.created_at <= now - dt.timedelta(minutes=QR_ORDER_MINUTES)),
            PosPayment.claimed_until.is_(None) | (PosPayment.claimed_until < now),
        )
        .order_by(PosPayment.created_at)
        .limit(100)
    ).all()
    claimed = []
    for payment_id in candidates:
        number = session.scalar(
            update(PosPayment)
            .where(
                PosPayment.id == payment_id,
                PosPayment.state == PaymentState.PAYING,
                PosPayment.claimed_until.is_(None) | (PosPayment.claimed_until < now),
            )
            .values(claimed_until=now + lease)
            .returning(PosPayment.out_trade_no)
        )
        if number is not None:
            claimed.append(number)
    return claimed


def _expire_awaiting(session: Session, now: dt.datetime) -> int:
    result = session.execute(
        update(PosPayment)
        .where(
            PosPayment.state == PaymentState.AWAITING,
            PosPayment.created_at <= now - dt.timedelta(minutes=QR_ORDER_MINUTES),
        )
        .values(
            state=PaymentState.FAILED,
            failure_code="expired",
            failure_message="not paid in time",
            finished_at=now,
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- aggregated QR ------------------------------------------------------------------


def open_qr_order(
    merchant: Merchant,
    amount_fen: int,
    *,
    terminal_id: int | None = None,
    order_no: str | None = None,
    body_hash: str | None = None,
) -> PosPayment:
    """An order waiting for a payer to scan a QR: the POS's dynamic QR for one
    order, or the amount a payer typed after scanning the merchant's static QR."""
    if amount_fen <= 0:
        raise InvalidAmount(lazy_gettext("The amount must be above zero."))
    now = pos_config().now()
    payment = PosPayment(
        out_trade_no=new_out_trade_no(now),
        merchant_id=merchant.id,
        terminal_id=terminal_id,
        terminal_order_no=order_no,
        request_hash=body_hash,
        source=PaymentSource.QR,
        amount_fen=amount_fen,
        refunded_fen=0,
        state=PaymentState.AWAITING,
        qr_token=secrets.token_urlsafe(16),
        description=DESCRIPTION,
        created_at=now,
    )
    if terminal_id is not None and order_no is not None:
        request = PayRequest(
            order_no=order_no, amount_fen=amount_fen, body_hash=body_hash or ""
        )
        existing = _existing(db.session(), terminal_id, request)
        if existing is not None:
            return existing
        existing = _insert_or_existing(payment, request)
        if existing is not None:
            return existing
    else:
        with writing() as session:
            session.add(payment)
    return find_payment(db.session(), payment.out_trade_no)


def find_qr_order(session: Session, token: str) -> PosPayment:
    payment = session.scalar(select(PosPayment).where(PosPayment.qr_token == token))
    if payment is None:
        raise PaymentNotFound()
    return payment


def start_qr_payment(token: str, channel_name: str, payer: PayerContext) -> Checkout:
    """Create the QR order at the payer's channel (JSAPI / in-app) and return
    what the payer's app needs. The order becomes ``paying``."""
    with writing() as session:
        payment = find_qr_order(session, token)
        payment = lock_payment(session, payment.out_trade_no)
        if payment.state is not PaymentState.AWAITING:
            raise QrOrderClosed(out_trade_no=payment.out_trade_no)
        payment.state = PaymentState.PAYING
        payment.channel = channel_name
        number, amount = payment.out_trade_no, payment.amount_fen
        expires_at = payment.created_at + dt.timedelta(minutes=QR_ORDER_MINUTES)
    order = OrderRequest(
        out_trade_no=number,
        amount_fen=amount,
        description=DESCRIPTION,
        notify_url=notify_url(channel_name),
        # The channel stops taking the payment when the QR's life ends, as the
        # stale-payment job then closes the order.
        expires_at=expires_at,
    )
    try:
        with recorded_call(channel_name, "create_order", number, order) as call:
            checkout = channel_for(channel_name).create_order(order, payer)
            call.response = checkout.raw
    except ChannelRejected as refused:
        _finish(
            number, PaymentState.FAILED, refused.error_code or "refused", str(refused)
        )
        raise
    return checkout


def pay_qr_from_wallet(
    token: str, card_number: str, pin_code: str | None
) -> PosPayment:
    """A signed-in student pays a QR order from their wallet, in one transaction."""
    config = pos_config()
    now = config.now()
    session = db.session()
    payment = find_qr_order(session, token)
    if payment.amount_fen > config.pin_above_fen:
        try:
            card_id = session.scalar(select(Card.id).where(Card.number == card_number))
            pin.check_pin(session, card_id or 0, pin_code, now)
        finally:
            session.commit()
    with writing() as session:
        payment = lock_payment(session, payment.out_trade_no)
        if payment.state is not PaymentState.AWAITING:
            raise QrOrderClosed(out_trade_no=payment.out_trade_no)
        merchant = session.get_one(Merchant, payment.merchant_id)
        posted = pay_from_wallet(
            session,
            card_number,
            payable_of(session, merchant.code),
            payment.amount_fen,
            idempotency_ref=f"pos:{payment.out_trade_no}",
            order_ref=payment.out_trade_no,
            memo="campus qr",
            created_by="student",
        )
        payment.channel = "campus"
        payment.card_id = session.scalar(
            select(Card.id).where(Card.number == card_number)
        )
        payment.state = PaymentState.SUCCEEDED
        payment.entry_id = posted.entry_id
        payment.paid_at = payment.finished_at = now
        number = payment.out_trade_no
    return find_payment(db.session(), number)


def payment_out(payment: PosPayment) -> dict[str, Any]:
    return {
        "out_trade_no": payment.out_trade_no,
        "order_no": payment.terminal_order_no,
        "state": payment.state.value,
        "channel": payment.channel,
        "source": payment.source.value,
        "amount_fen": payment.amount_fen,
        "refunded_fen": payment.refunded_fen,
        "code": payment.code_masked,
        "transaction_id": payment.transaction_id,
        "failure_code": payment.failure_code,
        "failure_message": payment.failure_message,
        "created_at": payment.created_at,
        "paid_at": payment.paid_at,
    }


def owns(session: Session, out_trade_no: str) -> bool:
    return (
        session.scalar(
            select(PosPayment.id).where(PosPayment.out_trade_no == out_trade_no)
        )
        is not None
    )
