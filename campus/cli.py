"""Command groups of the shell: ``flask db``, ``flask operator``, ``flask serve``.

Run from the repository root, ``flask`` finds ``wsgi.py`` by itself; elsewhere pass
``--app wsgi``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click
from alembic import command as alembic_command
from flask import Flask, current_app
from flask.cli import AppGroup

from campus.auth import Role, create_operator
from campus.database import db

logger = logging.getLogger(__name__)

Command = TypeVar("Command", bound=Callable[..., Any])


def reaches_channels(command: Command) -> Command:
    """For a command that calls a payment channel: with the embedded sandbox, make
    sure its gateways answer at the service's address, serving the app from this
    process for the command's length when ``flask serve`` is not running."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if "campus.sandbox" not in app.extensions:
            return command(*args, **kwargs)
        from sandbox.core import served_if_absent

        with served_if_absent(app, app.extensions["campus.settings"].base_url):
            return command(*args, **kwargs)

    return run  # type: ignore[return-value]


db_cli = AppGroup("db", help="Create and migrate the database.")


@db_cli.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest of every line)."""
    alembic_command.upgrade(db.alembic_config(), revision)
    click.echo(f"database at {db.current_revision()}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (``base`` empties it)."""
    alembic_command.downgrade(db.alembic_config(), revision)
    click.echo(f"database at {db.current_revision()}")


@db_cli.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one."""
    click.echo(f"current: {db.current_revision()}  head: {db.head_revision()}")


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@click.option(
    "--head",
    default="0001",
    show_default=False,
    help="The revision the new one follows (its package's latest).",
)
@click.option("--rev-id", default=None, help="Revision id, e.g. 0002.")
def db_revision(message: str, head: str, rev_id: str | None) -> None:
    """Write a new revision from the difference between models and database."""
    alembic_command.revision(
        db.alembic_config(),
        message=message,
        autogenerate=True,
        head=head,
        rev_id=rev_id,
        # A package's first revision starts its own line from 0001.
        splice=True,
    )


operator_cli = AppGroup("operator", help="Manage staff accounts.")


@operator_cli.command("create")
@click.argument("username")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice([role.value for role in Role]),
)
@click.option("--name", "display_name", default=None)
@click.password_option()
def operator_create(
    username: str, roles: tuple[str, ...], display_name: str | None, password: str
) -> None:
    """Create an operator with one or more roles."""
    with db.transaction() as session:
        create_operator(
            session, username, password, [Role(role) for role in roles], display_name
        )
    click.echo(f"operator {username} created with roles {', '.join(roles)}")


@click.command("serve")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--threads", default=16, type=int)
def serve(host: str, port: int, threads: int) -> None:
    """Serve the app with waitress (a production-grade WSGI server)."""
    import waitress

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = app.extensions["campus.settings"]
    if settings.scheduler:
        from campus import scheduler

        scheduler.start(app)
    sandbox = app.extensions.get("campus.sandbox")
    if sandbox is not None:
        from sandbox.control import start_delivery_thread

        start_delivery_thread(sandbox)
    click.echo(
        f"\n  校园卡服务已启动 / Campus card service is running: http://{host}:{port}/"
    )
    if not settings.production:
        click.echo("  学生（开发登录）/ students (development sign-in): /sign-in")
        click.echo(
            "  工作人员 / staff: /operator/sign-in  (demo: admin / admin-demo-pass)"
        )
        click.echo(
            "  校园卡与充值 / card and top-up: /card  付款码 / pay code: /card/pay-code"
        )
        click.echo("  我的成绩单 / my transcripts: /me/transcripts")
        click.echo(
            "  成绩单核验（无需登录）/ verify a transcript (no account): /verify"
        )
        click.echo(
            "  收银 / web POS: /pos   对账 / reconciliation: /reconciliation   "
            "教务 / registrar: /registrar/transcripts"
        )
        click.echo("  API 文档 / API docs: /docs")
        if sandbox is not None:
            click.echo(
                "  支付沙箱 / payment sandbox: /sandbox/  (演示付款人 / demo payer: "
                "/sandbox/payer/demo-1)"
            )
        click.echo("")
    waitress.serve(app, host=host, port=port, threads=threads, ident="campus-card")


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(operator_cli)
    app.cli.add_command(serve)
