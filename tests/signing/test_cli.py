"""``flask signing``: the commands a person runs, through a real app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskCliRunner

from campus import create_app
from campus.settings import Settings
from signing import signing_service
from signing.devpki import DevelopmentPKI
from tests.signing import tampering


@pytest.fixture
def runner(
    settings: Settings, pki: DevelopmentPKI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FlaskCliRunner]:
    # The session's PKI, so that no second one is made and served.
    monkeypatch.setenv("CAMPUS_SIGNING_DEV_PKI_PATH", str(pki.path))
    app = create_app(settings)
    yield app.test_cli_runner()


def test_app_creation_makes_no_pki(settings: Settings, tmp_path: Path) -> None:
    app = create_app(settings, instance_path=tmp_path / "fresh")

    assert signing_service(app).config.keys[0].kind == "development"
    assert not (tmp_path / "fresh" / "signing").exists()


def test_init_dev_pki_is_idempotent(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMPUS_SIGNING_DEV_PKI_PATH", str(tmp_path / "pki"))
    runner = create_app(settings).test_cli_runner()

    first = runner.invoke(args=["signing", "init-dev-pki"])
    second = runner.invoke(args=["signing", "init-dev-pki"])

    assert first.exit_code == 0, first.output
    assert first.output.startswith("made: ")
    assert second.exit_code == 0, second.output
    assert second.output.startswith("already there: ")
    assert first.output.splitlines()[1:] == second.output.splitlines()[1:]


def test_sign_then_validate(
    runner: FlaskCliRunner, document: bytes, tmp_path: Path
) -> None:
    source = tmp_path / "transcript.pdf"
    source.write_bytes(document)

    signed = runner.invoke(args=["signing", "sign", str(source), "--level", "B-LT"])
    checked = runner.invoke(
        args=["signing", "validate", str(tmp_path / "transcript.signed.pdf"), "--json"]
    )

    assert signed.exit_code == 0, signed.output
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.output)
    assert report["ok"] is True
    assert report["signatures"][0]["level"] == "B-LT"


def test_validate_exit_code_tells_the_bottom_line(
    runner: FlaskCliRunner,
    service,
    tmp_path: Path,
    document: bytes,  # type: ignore[no-untyped-def]
) -> None:
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(tampering.flip_byte_in_text(service.sign(document)))
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"not a pdf")

    tampered = runner.invoke(args=["signing", "validate", str(changed)])
    unreadable = runner.invoke(args=["signing", "validate", str(garbage)])

    assert tampered.exit_code == 1, tampered.output
    assert "failed" in tampered.output and "intact" in tampered.output
    assert unreadable.exit_code == 2, unreadable.output


def test_validate_stops_a_check_at_the_time_limit(
    settings: Settings,
    pki: DevelopmentPKI,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    service,  # type: ignore[no-untyped-def]
    document: bytes,
) -> None:
    # No file can be checked in a microsecond: the child is killed at the limit
    # and the command says so, instead of running on.
    monkeypatch.setenv("CAMPUS_SIGNING_DEV_PKI_PATH", str(pki.path))
    monkeypatch.setenv("CAMPUS_SIGNING_MAX_VALIDATION_SECONDS", "0.000001")
    runner = create_app(settings).test_cli_runner()
    signed = tmp_path / "signed.pdf"
    signed.write_bytes(service.sign(document))

    checked = runner.invoke(args=["signing", "validate", str(signed)])

    assert checked.exit_code == 2, checked.output
    assert "not checked within 1e-06 s (max_validation_seconds)" in checked.output


def test_status(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["signing", "status"])

    assert result.exit_code == 0, result.output
    assert "signer development:rsa" in result.output
    assert "[signs now]" in result.output
    assert "TSA http://127.0.0.1:" in result.output and ": ok," in result.output


def test_sign_and_validate_through_softhsm(
    settings: Settings,
    pki: DevelopmentPKI,
    softhsm: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    document: bytes,
    tmp_path: Path,
) -> None:
    for name, value in {
        "CAMPUS_SIGNING_DEV_PKI_PATH": str(pki.path),
        "CAMPUS_SIGNING_KEYS": "pkcs11:signer-ecdsa",
        "CAMPUS_SIGNING_PKCS11_MODULE": softhsm["module"],
        "CAMPUS_SIGNING_PKCS11_TOKEN_LABEL": softhsm["token"],
        "CAMPUS_SIGNING_PKCS11_PIN": softhsm["pin"],
    }.items():
        monkeypatch.setenv(name, value)
    runner = create_app(settings).test_cli_runner()
    source = tmp_path / "transcript.pdf"
    source.write_bytes(document)

    signed = runner.invoke(args=["signing", "sign", str(source), "-o", "out.pdf"])
    checked = runner.invoke(args=["signing", "validate", "out.pdf"])

    assert signed.exit_code == 0, signed.output
    assert checked.exit_code == 0, checked.output
    assert "Document Signer (ecdsa)" in checked.output
    Path("out.pdf").unlink()


def test_add_certificate_to_token(
    settings: Settings,
    pki: DevelopmentPKI,
    softhsm: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    for name, value in {
        "CAMPUS_SIGNING_DEV_PKI_PATH": str(pki.path),
        "CAMPUS_SIGNING_PKCS11_MODULE": softhsm["module"],
        "CAMPUS_SIGNING_PKCS11_TOKEN_LABEL": softhsm["token"],
        "CAMPUS_SIGNING_PKCS11_PIN": softhsm["pin"],
    }.items():
        monkeypatch.setenv(name, value)
    runner = create_app(settings).test_cli_runner()

    result = runner.invoke(
        args=[
            "signing",
            "add-certificate-to-token",
            str(pki.certificate_path("tsa")),
            "--label",
            "tsa-for-test",
        ]
    )

    assert result.exit_code == 0, result.output
    token = pkcs11.lib(softhsm["module"]).get_token(token_label=softhsm["token"])
    try:
        session = token.open(user_pin=softhsm["pin"])
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        session = token.open()  # an earlier test logged this process in
    with session:
        found = list(
            session.get_objects(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.LABEL: "tsa-for-test",
                }
            )
        )
    assert len(found) == 1
