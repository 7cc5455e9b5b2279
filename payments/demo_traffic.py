"""``flask demo traffic``: one business day of sandbox traffic with planted faults.

What a person needs to see the nightly reconciliation do its work: remote top-ups
and canteen payments of one day, paid by the sandbox's demo payers through the
same pages, SDK calls and notifications as production, with three problems
planted the way they happen in real life:

- a **lost notification**: a WeChat top-up the payer paid whose notification never
  arrives (the order stays paying; reconciliation repairs it);
- a **changed amount**: a WeChat canteen payment the bill lists one yuan higher
  than we charged (an amount mismatch for finance);
- a **midnight crossing**: an Alipay top-up paid just before midnight that the
  channel books on the next day (ours-only, held until the next bill).

The day is the newest one whose bills the channels already publish (they publish
day D from 10:00 on D+1, Asia/Shanghai), so the nightly command can run at once:
``flask reconcile nightly --date D``.

The command serves the app on a loopback port for the length of the run, as
``flask serve`` would, so that the sandbox's notifications reach our endpoints over
HTTP; the sandbox clock of that app is set to the demo day. Fault switches are kept
in the instance folder (``sandbox/faults.json``), so the planted bill faults still
hold when the nightly run asks for the bills from another process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import requests
from flask import Flask, current_app
from sqlalchemy import select

from campus.auth import Operator
from campus.database import db
from payments.cards import Card, CardStatus
from payments.channels.base import PayerContext, PayerKind
from payments.channels.campus import codes
from payments.merchants import Merchant, Terminal
from payments.pos import refunds
from payments.pos.cli import send
from payments.pos.config import pos_config
from payments.remote_top_up import start_top_up

logger = logging.getLogger(__name__)

# Channels publish day D's bill from this hour of D+1 (Asia/Shanghai).
BILL_READY_HOUR = 10
# The demo payer with the most money, in both apps; the day starts by giving the
# payers back their starting balances, so that any number of days can be played.
PAYER = "demo-1"


@dataclasses.dataclass(frozen=True)
class Planted:
    """A problem put into the day on purpose, and where finance should find it."""

    channel: str
    out_trade_no: str
    fault: str
    expected_kind: str
    expected_status: str


@dataclasses.dataclass
class DayOfTraffic:
    day: dt.date
    top_ups: list[str] = dataclasses.field(default_factory=list)
    payments: list[str] = dataclasses.field(default_factory=list)
    refunds: list[str] = dataclasses.field(default_factory=list)
    planted: list[Planted] = dataclasses.field(default_factory=list)


class DemoTrafficError(click.ClickException):
    pass


def latest_billed_day(now: dt.datetime, zone: dt.tzinfo) -> dt.date:
    """The newest day whose bills the channels already publish at ``now``."""
    local = now.astimezone(zone)
    days_back = 1 if local.hour >= BILL_READY_HOUR else 2
    return local.date() - dt.timedelta(days=days_back)


def run_day(
    app: Flask,
    base_url: str,
    day: dt.date,
    *,
    top_ups: int,
    payments: int,
    rng: random.Random,
    progress: Any = None,
) -> DayOfTraffic:
    """Play one day through ``app`` (served at ``base_url``) and its sandbox."""
    settings = app.extensions["campus.settings"]
    sandbox = app.extensions["campus.sandbox"]
    zone = settings.zone
    traffic = DayOfTraffic(day)
    payer = requests.Session()

    def at(hour: int, minute: int, second: int = 0) -> None:
        moment = dt.datetime.combine(day, dt.time(hour, minute, second), zone)
        sandbox.clock.set(moment)

    cards, terminals, finance = _cast(rng)
    for gateway in sandbox.gateways.values():
        gateway.reset_payers()
    steps = top_ups + payments + 3
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps)

    # The morning: top-ups, one of them paid without its notification arriving.
    for index in range(top_ups):
        at(7, 30 + index % 30, index % 60)
        channel = "wechat" if index % 2 == 0 else "alipay"
        card = cards[index % len(cards)]
        amount_fen = rng.choice((2000, 5000, 10000))
        traffic.top_ups.append(
            _top_up(payer, base_url, sandbox, card, amount_fen, channel)
        )
        step()
    at(8, 15)
    sandbox.faults.set("wechat", "notification", "drop")
    lost = _top_up(payer, base_url, sandbox, cards[0], 3000, "wechat")
    sandbox.faults.clear("wechat")
    traffic.top_ups.append(lost)
    traffic.planted.append(
        Planted("wechat", lost, "lost notification", "channel_only", "repaired")
    )
    step()

    # Lunch: canteen payments by WeChat, Alipay and campus codes.
    for index in range(payments):
        at(11, 30 + index % 30, index % 60)
        terminal = terminals[index % len(terminals)]
        source = ("wechat", "alipay", "campus")[index % 3]
        amount_fen = rng.choice((850, 1200, 1500, 2250))
        code = _payment_code(sandbox, source, cards[index % len(cards)])
        traffic.payments.append(_pay(base_url, terminal, amount_fen, code))
        step()
    at(12, 40)
    changed = _pay(
        base_url, terminals[0], 1600, _payment_code(sandbox, "wechat", cards[0])
    )
    sandbox.faults.set("wechat", "bill", "changed_amount", changed)
    traffic.payments.append(changed)
    traffic.planted.append(
        Planted("wechat", changed, "changed amount", "amount_mismatch", "open")
    )
    step()

    # The afternoon: a partial refund of the first channel payment.
    at(14, 5)
    if traffic.payments:
        _end_read()
        refund = refunds.open_refund(
            traffic.payments[0],
            300,
            operator=db.session.merge(finance, load=False),
            reason="演示部分退款 demo",
        )
        traffic.refunds.append(refund.out_refund_no)
        _end_read()
        sandbox.outbox.deliver_due()

    # Just before midnight: an Alipay top-up the channel books on the next day.
    at(23, 59, 40)
    late = _top_up(payer, base_url, sandbox, cards[1 % len(cards)], 4000, "alipay")
    sandbox.faults.set("alipay", "bill_after_midnight", True, late)
    traffic.top_ups.append(late)
    traffic.planted.append(
        Planted("alipay", late, "midnight crossing", "ours_only", "held")
    )
    step()
    sandbox.clock.reset()
    logger.info(
        "demo_traffic_played",
        extra={
            "day": day.isoformat(),
            "top_ups": len(traffic.top_ups),
            "payments": len(traffic.payments),
        },
    )
    return traffic


@dataclasses.dataclass(frozen=True)
class _Card:
    id: int
    number: str


def _cast(rng: random.Random) -> tuple[list[_Card], list[tuple[str, str]], Operator]:
    """Cards with money, the canteens' terminals and the finance operator of the
    demo data (``flask demo seed``)."""
    session = db.session
    cards = list(
        session.scalars(
            select(Card).where(Card.status == CardStatus.ACTIVE).order_by(Card.id)
        ).all()
    )
    cards = [
        _Card(card.id, card.number)
        for card in cards
        if card.wallet.balance_fen >= 10_000
    ]
    terminals = [
        (terminal.key_id, terminal.secret)
        for terminal in session.scalars(
            select(Terminal)
            .join(Merchant)
            .where(Terminal.enabled)
            .order_by(Terminal.id)
        )
    ]
    finance = session.scalar(select(Operator).where(Operator.username == "finance"))
    if len(cards) < 2 or not terminals or finance is None:
        raise DemoTrafficError(
            "没有演示数据，请先运行 flask demo seed / "
            "no demo data: run `flask demo seed` first"
        )
    rng.shuffle(cards)
    session.expunge(finance)
    _end_read()
    return cards[:20], terminals, finance


def _end_read() -> None:
    """End this thread's read transaction: on SQLite a write begun inside a read
    snapshot older than another connection's commit is refused as locked. A web
    request gets a fresh session each time; a command loop must ask for it."""
    db.session.rollback()


def _top_up(
    payer: requests.Session,
    base_url: str,
    sandbox: Any,
    card: _Card,
    amount_fen: int,
    channel: str,
) -> str:
    """Open a desktop top-up and pay its QR as the demo payer does in the app."""
    kind = PayerKind.NATIVE if channel == "wechat" else PayerKind.PRECREATE
    _end_read()
    top_up, checkout = start_top_up(
        card.number, amount_fen, channel, PayerContext(kind=kind)
    )
    out_trade_no = top_up.out_trade_no
    _end_read()
    assert checkout.qr_content is not None
    if channel == "wechat":
        prepay = parse_qs(urlsplit(checkout.qr_content).query)["pr"][0]
        answer = payer.post(
            f"{base_url}/sandbox/pay/wechat/{prepay}",
            data={"payer": PAYER, "action": "confirm"},
            timeout=30,
        )
    else:
        page = payer.get(checkout.qr_content, timeout=30)
        answer = payer.post(
            page.url,
            data={"payer_id": PAYER, "action": "confirm"},
            timeout=30,
        )
    if answer.status_code != 200:
        raise DemoTrafficError(
            f"the sandbox payer could not pay top-up {out_trade_no}: "
            f"{answer.status_code}"
        )
    sandbox.outbox.deliver_due()
    return out_trade_no


def _payment_code(sandbox: Any, source: str, card: _Card) -> str:
    if source == "wechat":
        return str(sandbox.gateways["wechat"].current_code(PAYER))
    if source == "alipay":
        return str(sandbox.gateways["alipay"].current_code(PAYER))
    config = pos_config()
    _end_read()
    with db.transaction() as session:
        code, _ = codes.issue_code(
            session,
            card.id,
            now=config.now(),
            lifetime_seconds=config.campus_code_seconds,
        )
    return code


def _pay(base_url: str, terminal: tuple[str, str], amount_fen: int, code: str) -> str:
    key_id, secret = terminal
    status, answer = send(
        key_id,
        secret,
        "POST",
        "/api/terminal/payments",
        {
            "order_no": "DEMO" + secrets.token_hex(6),
            "amount_fen": amount_fen,
            "code": code,
        },
        server=base_url,
    )
    if status != 200 or answer.get("state") != "succeeded":
        raise DemoTrafficError(f"a demo canteen payment did not succeed: {answer}")
    return str(answer["out_trade_no"])


def serve_and_run(
    day: dt.date | None, top_ups: int, payments: int, seed: int
) -> DayOfTraffic:
    """Serve a copy of the current app on loopback and play the day through it."""
    from campus import create_app
    from sandbox.core import LoopbackServer

    settings = current_app.extensions["campus.settings"]
    if "campus.sandbox" not in current_app.extensions:
        raise DemoTrafficError(
            "演示流量需要沙箱支付通道 / demo traffic needs the sandbox channels "
            "(CAMPUS_CHANNELS=sandbox)"
        )
    if day is None:
        day = latest_billed_day(dt.datetime.now(dt.UTC), settings.zone)
    forward = _Forward()
    server = LoopbackServer(forward).start()
    try:
        served = create_app(settings, base_url=server.url)
        forward.target = served
        with (
            served.app_context(),
            click.progressbar(length=top_ups + payments + 3, label="demo day") as bar,
        ):

            def progress(done: int, total: int) -> None:
                bar.update(done - bar.pos)

            return run_day(
                served,
                server.url,
                day,
                top_ups=top_ups,
                payments=payments,
                rng=random.Random(seed),
                progress=progress,
            )
    finally:
        server.stop()


class _Forward:
    """A WSGI app forwarding to one made after the server has its port."""

    target: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.target(environ, start_response)
