"""``flask card``, ``flask ledger`` and ``flask demo`` commands."""

from __future__ import annotations

import datetime as dt
import logging
import random
import sys

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from campus.auth import Operator, Role, create_operator
from campus.cli import reaches_channels
from campus.database import db
from campus.errors import CampusError
from campus.people import Person, PersonKind, find_person
from payments import ledger
from payments.cards import CardStatus, change_status, find_card, open_card
from payments.merchants import MerchantKind, Terminal, add_terminal, open_merchant
from payments.money import format_yuan

card_cli = AppGroup("card", help="Open, freeze, unfreeze and close cards; balances.")
ledger_cli = AppGroup("ledger", help="Prove the ledger.")
demo_cli = AppGroup("demo", help="Demonstration data.")
top_up_cli = AppGroup("top-ups", help="Remote top-ups.")

ACTOR = "cli"


def _fail(error: CampusError) -> None:
    click.echo(f"error [{error.code}]: {error.detail}", err=True)
    sys.exit(1)


@card_cli.command("open")
@click.argument("holder_number")
@click.option("--number", default=None, help="Card number; generated when omitted.")
@click.option("--offline-purse", is_flag=True, help="The card keeps a chip balance.")
def card_open(holder_number: str, number: str | None, offline_purse: bool) -> None:
    """Open a card for the person numbered HOLDER_NUMBER."""
    try:
        with db.transaction() as session:
            person = find_person(session, holder_number)
            if person is None:
                raise click.ClickException(f"no person numbered {holder_number}")
            card = open_card(
                session, person, actor=ACTOR, number=number, offline_purse=offline_purse
            )
    except CampusError as error:
        _fail(error)
    click.echo(f"card {card.number} opened for {holder_number}")


def _status_command(name: str, status: CardStatus, help_text: str) -> None:
    @card_cli.command(name, help=help_text)
    @click.argument("number")
    @click.option("--reason", required=True, help="Why; kept in the card's history.")
    def command(number: str, reason: str) -> None:
        try:
            with db.transaction() as session:
                change_status(session, number, status, reason=reason, actor=ACTOR)
        except CampusError as error:
            _fail(error)
        click.echo(f"card {number} is now {status.value}")


_status_command("freeze", CardStatus.FROZEN, "Freeze a card; its balance is kept.")
_status_command("report-lost", CardStatus.LOST, "Mark a card as lost.")
_status_command("unfreeze", CardStatus.ACTIVE, "Make a frozen or lost card active.")
_status_command("close", CardStatus.CLOSED, "Close a card with a zero balance.")


@card_cli.command("balance")
@click.argument("number")
def card_balance(number: str) -> None:
    """Print a card's status and balance in yuan."""
    try:
        card = find_card(db.session, number)
    except CampusError as error:
        _fail(error)
    click.echo(
        f"{card.number}  {card.person.name_zh} {card.person.name_en}  "
        f"{card.status.value}  ¥{format_yuan(card.balance_fen)}"
    )


@card_cli.command("statement")
@click.argument("number")
@click.option("--limit", default=20, show_default=True)
def card_statement(number: str, limit: int) -> None:
    """Print a card's latest postings with the balance after each."""
    try:
        card = find_card(db.session, number)
    except CampusError as error:
        _fail(error)
    click.echo(f"{card.number}  balance ¥{format_yuan(card.balance_fen)}")
    for line in ledger.statement(db.session, card.wallet, limit):
        at = line.at.astimezone(db_zone()).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{at}  {line.kind.value:<10} {format_yuan(line.amount_fen):>10}"
            f"  {format_yuan(line.balance_fen):>10}  {line.order_ref or ''}"
        )


def db_zone():  # type: ignore[no-untyped-def]
    from flask import current_app

    return current_app.extensions["campus.settings"].zone


@ledger_cli.command("check")
def ledger_check() -> None:
    """Verify the trial balance and every cached balance; exit 1 on a difference."""
    problems = ledger.check_ledger(db.session)
    if not problems:
        click.echo("ledger balanced: trial balance 0, every cached balance matches")
        return
    for problem in problems:
        click.echo(f"{problem.account or '-'}: {problem.description}", err=True)
    sys.exit(1)


SURNAMES = [
    ("王", "Wang"),
    ("李", "Li"),
    ("张", "Zhang"),
    ("刘", "Liu"),
    ("陈", "Chen"),
    ("杨", "Yang"),
    ("赵", "Zhao"),
    ("黄", "Huang"),
    ("周", "Zhou"),
    ("吴", "Wu"),
    ("徐", "Xu"),
    ("孙", "Sun"),
    ("胡", "Hu"),
    ("朱", "Zhu"),
    ("高", "Gao"),
]
GIVEN = [
    ("伟", "Wei"),
    ("芳", "Fang"),
    ("娜", "Na"),
    ("敏", "Min"),
    ("静", "Jing"),
    ("磊", "Lei"),
    ("洋", "Yang"),
    ("艳", "Yan"),
    ("勇", "Yong"),
    ("杰", "Jie"),
    ("娟", "Juan"),
    ("涛", "Tao"),
    ("明", "Ming"),
    ("超", "Chao"),
    ("秀英", "Xiuying"),
    ("思远", "Siyuan"),
    ("雨桐", "Yutong"),
    ("子涵", "Zihan"),
    ("浩然", "Haoran"),
]
MERCHANTS = [
    ("C1W01", "一食堂 1 号窗口", "Canteen 1, window 1", MerchantKind.CANTEEN_WINDOW),
    ("C1W02", "一食堂 2 号窗口", "Canteen 1, window 2", MerchantKind.CANTEEN_WINDOW),
    (
        "C1W03",
        "一食堂 清真窗口",
        "Canteen 1, halal window",
        MerchantKind.CANTEEN_WINDOW,
    ),
    (
        "C2W01",
        "二食堂 面食窗口",
        "Canteen 2, noodle window",
        MerchantKind.CANTEEN_WINDOW,
    ),
    ("C2W02", "二食堂 麻辣烫", "Canteen 2, malatang", MerchantKind.CANTEEN_WINDOW),
    ("SHOP01", "校园超市", "Campus supermarket", MerchantKind.SHOP),
    ("SHOP02", "图文打印店", "Print shop", MerchantKind.SHOP),
]
OPERATORS = [
    ("admin", Role.ADMIN, "系统管理员 Administrator"),
    ("finance", Role.FINANCE, "财务 Finance"),
    ("cashier", Role.CASHIER, "收银员 Cashier"),
    ("registrar", Role.REGISTRAR, "教务 Registrar"),
    ("auditor", Role.AUDITOR, "审计 Auditor"),
]


@demo_cli.command("seed")
@click.option("--students", default=300, show_default=True)
@click.option("--seed", "random_seed", default=2026, show_default=True)
def demo_seed(students: int, random_seed: int) -> None:
    """Create demo students with cards and balances, merchants with terminals, and
    one operator per role (password: ``<username>-demo-pass``). Does nothing when
    the demo data is already there."""
    session = db.session
    if session.query(Operator).filter_by(username="admin").first() is not None:
        click.echo("demo data already present")
        return
    rng = random.Random(random_seed)
    # One INFO line per card and entry would bury the summary.
    quiet = logging.getLogger("payments")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        _seed(students, rng)
    finally:
        quiet.setLevel(level)
    click.echo(
        f"demo data: {students} students with cards, {len(MERCHANTS)} merchants, "
        f"operators {', '.join(name for name, _, _ in OPERATORS)}"
    )
    # Key ids are random: the quick start's `flask pos pay --terminal` needs one.
    till = session.scalars(select(Terminal).order_by(Terminal.id)).first()
    if till is not None:
        click.echo(
            f"demo terminal / 演示终端: {till.key_id} ({till.merchant.code} "
            f"{till.name}); all: flask pos terminals"
        )


@demo_cli.command("traffic")
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Business day to play; default: the newest day whose bills are out.",
)
@click.option("--top-ups", default=8, show_default=True)
@click.option("--payments", default=12, show_default=True)
@click.option("--seed", "random_seed", default=2026, show_default=True)
def demo_traffic(
    day: dt.datetime | None, top_ups: int, payments: int, random_seed: int
) -> None:
    """Play one day of top-ups and canteen payments through the sandbox with three
    problems planted (a lost notification, a changed amount, a midnight crossing),
    then say where the nightly reconciliation should put each."""
    from payments.demo_traffic import serve_and_run

    # The day's hundreds of INFO lines would bury the progress bar and the summary.
    quiet = [logging.getLogger(name) for name in ("payments", "sandbox", "werkzeug")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    try:
        traffic = serve_and_run(
            day.date() if day else None, top_ups, payments, random_seed
        )
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    click.echo(
        f"demo day {traffic.day}: {len(traffic.top_ups)} top-ups, "
        f"{len(traffic.payments)} canteen payments, {len(traffic.refunds)} refund"
    )
    click.echo("planted / 埋入的问题:")
    for planted in traffic.planted:
        click.echo(
            f"  {planted.channel:7} {planted.out_trade_no}  {planted.fault:18} "
            f"→ {planted.expected_kind} ({planted.expected_status})"
        )
    click.echo(f"next / 下一步: flask reconcile nightly --date {traffic.day}")


def _seed(students: int, rng: random.Random) -> None:
    with db.transaction() as session:
        for username, role, name in OPERATORS:
            create_operator(session, username, f"{username}-demo-pass", [role], name)
        opening = ledger.system_account(
            session,
            "opening",
            ledger.AccountKind.SUSPENSE,
            "opening balances from the previous card system",
        )
        for code, name_zh, name_en, kind in MERCHANTS:
            merchant = open_merchant(session, code, name_zh, name_en, kind)
            for index in (1, 2):
                add_terminal(session, merchant, f"POS {index}")
        with click.progressbar(range(students), label="students") as bar:
            for index in bar:
                surname, given = rng.choice(SURNAMES), rng.choice(GIVEN)
                person = Person(
                    number=f"2023{index + 1:06d}",
                    kind=PersonKind.STUDENT,
                    name_zh=surname[0] + given[0],
                    name_en=f"{given[1]} {surname[1]}",
                )
                session.add(person)
                card = open_card(
                    session,
                    person,
                    actor=ACTOR,
                    number=f"9100{index + 1:08d}",
                    offline_purse=index % 10 == 9,
                )
                balance = rng.randrange(0, 50_000, 50)
                if balance:
                    ledger.transfer(
                        session,
                        kind=ledger.EntryKind.OPENING,
                        idempotency_ref=f"opening:{card.number}",
                        source=opening,
                        destination=card.wallet,
                        amount_fen=balance,
                        memo="demo opening balance",
                        created_by=ACTOR,
                    )


@top_up_cli.command("resolve")
@click.option(
    "--older-than",
    default=120,
    show_default=True,
    help="Seconds an order must have been paying.",
)
@reaches_channels
def top_ups_resolve(older_than: int) -> None:
    """Query top-ups still paying, settle the paid ones, close the expired ones.
    Safe to run from cron on several machines at once."""
    import datetime as dt

    from payments.remote_top_up import resolve_stale_top_ups

    report = resolve_stale_top_ups(older_than=dt.timedelta(seconds=older_than))
    click.echo(
        f"settled {report.settled}, closed {report.closed}, "
        f"still paying {report.still_paying}, unknown {report.unknown}"
    )


def init_app(app: Flask) -> None:
    from campus.scheduler import Job, register_job
    from payments.remote_top_up import resolve_stale_top_ups

    register_job(app, Job("resolve_top_ups", resolve_stale_top_ups, every_seconds=60))
    app.cli.add_command(top_up_cli)
    app.cli.add_command(card_cli)
    app.cli.add_command(ledger_cli)
    app.cli.add_command(demo_cli)
