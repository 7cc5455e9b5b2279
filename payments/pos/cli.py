"""``flask pos …``: a POS simulator that signs like a terminal, the list of
terminals it can sign as, and the POS jobs.

``flask pos pay --terminal T… --amount 12.50 --code …`` builds the same signed
request a terminal sends. With ``--server http://host:port`` it goes over HTTP to a
running service; without, through the app's test client in this process (the same
WSGI app, the same signature check), which needs no server. The terminal's secret
comes from ``--secret`` or, on the service's own machine, from the database.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import click
import requests
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select

from campus.auth import Operator
from campus.cli import reaches_channels
from campus.database import db
from payments.merchants import Terminal, find_merchant
from payments.money import parse_fen
from payments.pos import refunds, service
from payments.pos.models import CashierMerchant
from payments.pos.terminal_auth import sign

pos = AppGroup("pos", help="Canteen POS: simulator and jobs.")


def _secret(key_id: str, given: str | None) -> str:
    if given:
        return given
    secret = db.session.scalar(select(Terminal.secret).where(Terminal.key_id == key_id))
    if secret is None:
        raise click.ClickException(f"no terminal {key_id}; pass --secret")
    return secret


def send(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    server: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    raw = json.dumps(body).encode() if body is not None else b""
    signed = sign(secret, method, path, raw, key_id=key_id, timestamp=_stamp())
    signed.update(headers or {})
    if body is not None:
        signed["Content-Type"] = "application/json"
    if server:
        answer = requests.request(
            method, server.rstrip("/") + path, data=raw, headers=signed, timeout=60
        )
        return answer.status_code, answer.json()
    response = current_app.test_client().open(
        path, method=method, data=raw, headers=signed
    )
    return response.status_code, response.get_json()


def _stamp() -> int:
    from payments.pos.config import pos_config

    return int(pos_config().now().timestamp())


@pos.command("pay")
@click.option("--terminal", "key_id", required=True, help="terminal key id (T…)")
@click.option("--amount", required=True, help="yuan, e.g. 12.50")
@click.option("--code", default=None, help="scanned payment code")
@click.option("--card", default=None, help="card number, as a tap")
@click.option("--pin", default=None)
@click.option("--order-no", default=None, help="default: a new one")
@click.option("--server", default=None, help="http://host:port of a running server")
@click.option("--secret", default=None, help="terminal secret (default: database)")
@reaches_channels
def pay_command(
    key_id: str,
    amount: str,
    code: str | None,
    card: str | None,
    pin: str | None,
    order_no: str | None,
    server: str | None,
    secret: str | None,
) -> None:
    """Take a payment as a terminal would, and print the answer."""
    body: dict[str, Any] = {
        "order_no": order_no or "CLI" + secrets.token_hex(6),
        "amount_fen": parse_fen(amount),
    }
    if code:
        body["code"] = code
    if card:
        body["card_number"] = card
    if pin:
        body["pin"] = pin
    status, answer = send(
        key_id,
        _secret(key_id, secret),
        "POST",
        "/api/terminal/payments",
        body,
        server=server,
    )
    click.echo(json.dumps({"status": status, **answer}, ensure_ascii=False, indent=2))


@pos.command("query")
@click.option("--terminal", "key_id", required=True)
@click.option("--order-no", required=True)
@click.option("--server", default=None)
@click.option("--secret", default=None)
@reaches_channels
def query_command(
    key_id: str, order_no: str, server: str | None, secret: str | None
) -> None:
    """Ask for a payment by the terminal's order number."""
    status, answer = send(
        key_id,
        _secret(key_id, secret),
        "GET",
        f"/api/terminal/payments/{order_no}",
        None,
        server=server,
    )
    click.echo(json.dumps({"status": status, **answer}, ensure_ascii=False, indent=2))


@pos.command("terminals")
@click.option("--merchant", "merchant_code", default=None, help="one merchant only")
def terminals_command(merchant_code: str | None) -> None:
    """List terminals: merchant, key id (for ``pos pay --terminal``), enabled.
    Secrets are not shown: on this machine ``pos pay`` reads them itself."""
    query = select(Terminal).order_by(Terminal.id)
    if merchant_code:
        query = query.where(
            Terminal.merchant_id == find_merchant(db.session(), merchant_code).id
        )
    rows = db.session.scalars(query).all()
    if not rows:
        raise click.ClickException("no terminals; run flask demo seed")
    click.echo(f"{'merchant':10} {'terminal key id':32} {'enabled':8} name")
    for terminal in rows:
        enabled = "yes" if terminal.enabled else "no"
        click.echo(
            f"{terminal.merchant.code:10} {terminal.key_id:32} {enabled:8} "
            f"{terminal.merchant.name_zh} · {terminal.name}"
        )


@pos.command("resolve-stale")
@reaches_channels
def resolve_command() -> None:
    """Finish payments a crashed process left paying, and refunds left
    processing (cron or systemd timer)."""
    report = service.resolve_stale()
    click.echo(
        json.dumps({**report.__dict__, "refunds": refunds.resolve_stale_refunds()})
    )


@pos.command("assign-cashier")
@click.option("--operator", "username", required=True)
@click.option("--merchant", "merchant_code", required=True)
def assign_cashier(username: str, merchant_code: str) -> None:
    """Let a cashier refund a merchant's payments of the day."""
    with db.transaction() as session:
        operator = session.scalar(select(Operator).where(Operator.username == username))
        if operator is None:
            raise click.ClickException(f"no operator {username}")
        merchant = find_merchant(session, merchant_code)
        if session.get(CashierMerchant, (operator.id, merchant.id)) is None:
            session.add(
                CashierMerchant(operator_id=operator.id, merchant_id=merchant.id)
            )
    click.echo(f"{username} → {merchant_code}")


def init_app(app: Flask) -> None:
    app.cli.add_command(pos)
