"""``flask signing``: make the development PKI, sign, validate, show status.

``validate`` exits 0 when the file is valid, 1 when it is not, 2 when it is not a
readable signed PDF or could not be checked within the validation time limit
(``max_validation_seconds``), so scripts can branch on the bottom line. The file is
validated in a child process killed at that limit (``signing.workers``): a hostile
file cannot hold the command past it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click
from flask import current_app
from flask.cli import with_appcontext

from signing.config import Level
from signing.devpki import DevelopmentPKI
from signing.errors import SigningConfigError, SigningError
from signing.service import SigningService
from signing.signer import Seal
from signing.workers import OutOfTime, ValidationWorkers, WorkerFailed

logger = logging.getLogger(__name__)


def _service() -> SigningService:
    from signing import signing_service

    return signing_service(current_app)


@click.group("signing")
def signing_group() -> None:
    """Sign and validate PDF documents (PAdES)."""


@signing_group.command("init-dev-pki")
@with_appcontext
def init_dev_pki() -> None:
    """Make the development PKI in the instance folder, unless it is there."""
    service = _service()
    if service.production:
        raise click.ClickException(
            "production mode refuses the development PKI; configure "
            "CAMPUS_SIGNING_KEYS, CAMPUS_SIGNING_TRUST_ROOTS and "
            "CAMPUS_SIGNING_TSA_URLS"
        )
    path = service.dev_pki_path
    existed = (path / "manifest.json").exists()
    pki = DevelopmentPKI.ensure(path)
    click.echo(("already there: " if existed else "made: ") + str(pki.path))
    click.echo(f"services: {pki.base_url} (TSA {pki.tsa_url})")
    for name, certificate in pki.certificates():
        click.echo(
            f"  {name:15} {certificate.subject.rfc4514_string()}  "
            f"until {certificate.not_valid_after_utc:%Y-%m-%d}"
        )


@signing_group.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the signed file (default: FILE.signed.pdf).",
)
@click.option(
    "--level",
    type=click.Choice([level.value for level in Level]),
    help="PAdES level (default: CAMPUS_SIGNING_LEVEL, B-LTA).",
)
@click.option(
    "--seal-image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PNG or JPEG of a visible seal.",
)
@click.option(
    "--seal-page",
    type=int,
    default=0,
    show_default=True,
    help="Page of the seal: 0 the first, -1 the last.",
)
@click.option(
    "--seal-box",
    default="420,40,540,160",
    show_default=True,
    help="x1,y1,x2,y2 of the seal in points from the bottom left.",
)
@click.option("--reason", help="Reason recorded in the signature.")
@with_appcontext
def sign(
    file: Path,
    output: Path | None,
    level: str | None,
    seal_image: Path | None,
    seal_page: int,
    seal_box: str,
    reason: str | None,
) -> None:
    """Certify FILE with the current signing key."""
    seal = None
    if seal_image is not None:
        try:
            x1, y1, x2, y2 = (int(part) for part in seal_box.split(","))
        except ValueError as error:
            raise click.BadParameter(
                "write x1,y1,x2,y2", param_hint="--seal-box"
            ) from error
        seal = Seal(seal_image, seal_page, (x1, y1, x2, y2))
    output = output or file.with_suffix(".signed.pdf")
    try:
        signed = _service().sign(
            file.read_bytes(),
            level=Level.parse(level) if level else None,
            seal=seal,
            reason=reason,
        )
    except SigningError as error:
        raise click.ClickException(str(error)) from error
    output.write_bytes(signed)
    click.echo(f"signed: {output} ({len(signed)} bytes)")


@signing_group.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--offline", is_flag=True, help="Use only the revocation data embedded in the file."
)
@click.option(
    "--at",
    "moment",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Validate as of this UTC time instead of now.",
)
@with_appcontext
def validate(
    file: Path, as_json: bool, offline: bool, moment: dt.datetime | None
) -> None:
    """Validate FILE. Exit code: 0 valid, 1 not valid, 2 unreadable or out of
    time."""
    try:
        service = _service()
        fetching = service.config.allow_fetching and not offline
        if fetching:
            # The development PKI's responders run in this process; the child
            # asks them over HTTP.
            service.ensure_trust_services()
        recipe = service.validator_recipe(allow_fetching=fetching)
    except SigningConfigError as error:
        raise click.ClickException(str(error)) from error
    seconds = recipe.max_seconds
    try:
        with ValidationWorkers(recipe, 1, seconds) as workers:
            # The child's start (pyHanko's imports) is not the file's time.
            workers.warm()
            report = workers.validate(
                file.read_bytes(), moment.replace(tzinfo=dt.UTC) if moment else None
            )
    except OutOfTime:
        _not_validated(
            file, f"not checked within {seconds:g} s (max_validation_seconds)"
        )
    except WorkerFailed as error:
        _not_validated(file, f"could not be read: {error.detail}")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(
            report.parses.outcome.value.ljust(15) + "parses: " + report.parses.detail
        )
        for signature in report.signatures:
            click.echo(
                f"{signature.kind} {signature.field}"
                f" — {signature.signer} ({signature.level or '-'})"
            )
            for name, check in signature.checks.items():
                click.echo(f"  {check.outcome.value:13} {name}: {check.detail}")
            if signature.signing_time:
                click.echo(
                    f"  signing time: {signature.signing_time.isoformat()}"
                    f" ({signature.signing_time_source})"
                )
        click.echo(report.summary)
    sys.exit(report.exit_code)


def _not_validated(file: Path, reason: str) -> NoReturn:
    logger.warning("cli_validation_failed", extra={"file": file.name, "reason": reason})
    click.echo(f"{file}: {reason}", err=True)
    sys.exit(2)


@signing_group.command("add-certificate-to-token")
@click.argument(
    "certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--label", required=True, help="The label of the key it belongs to.")
@with_appcontext
def add_certificate_to_token(certificate: Path, label: str) -> None:
    """Store a PEM CERTIFICATE on the CAMPUS_SIGNING_PKCS11_* token beside the key
    labelled LABEL (softhsm2-util imports keys only)."""
    from cryptography import x509

    from signing.keys import store_certificate_on_token

    config = _service().config
    if not (config.pkcs11_module and config.pkcs11_token_label):
        raise click.ClickException(
            "set CAMPUS_SIGNING_PKCS11_MODULE, CAMPUS_SIGNING_PKCS11_TOKEN_LABEL "
            "and CAMPUS_SIGNING_PKCS11_PIN"
        )
    try:
        parsed = x509.load_pem_x509_certificate(certificate.read_bytes())
    except ValueError as error:
        raise click.ClickException(f"{certificate} is not a PEM certificate") from error
    try:
        store_certificate_on_token(config, label, parsed)
    except SigningError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"stored {parsed.subject.rfc4514_string()} as {label!r}")


@signing_group.command("status")
@with_appcontext
def status() -> None:
    """Show certificates, their expiry, and whether each TSA answers."""
    report = _service().status()
    if report.development_pki:
        click.echo(f"development PKI: {report.development_pki}")
    for certificate in report.certificates:
        until = (
            f"until {certificate.not_after:%Y-%m-%d} ({certificate.days_left} days)"
            if certificate.not_after
            else "unreadable"
        )
        note = f"  [{certificate.note}]" if certificate.note else ""
        click.echo(f"{certificate.role}: {certificate.subject}, {until}{note}")
    for url, error, ms in report.timestamp_authorities:
        click.echo(f"TSA {url}: " + (f"FAILED {error}" if error else f"ok, {ms} ms"))
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    sys.exit(0 if report.ok else 1)
