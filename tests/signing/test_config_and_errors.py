"""Settings read from the environment, production's refusal of the development
PKI, and the errors a signer gives when a key or a trust service fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from signing.config import KeyReference, Level, SigningConfig
from signing.devpki import DevelopmentPKI
from signing.errors import (
    KeyUnavailable,
    SigningConfigError,
    TrustServiceUnavailable,
)
from signing.service import SigningService


def test_settings_are_read_field_by_field() -> None:
    config = SigningConfig.from_environ(
        {
            "CAMPUS_SIGNING_KEYS": "pkcs12:/etc/old.p12, pkcs11:signer-2027",
            "CAMPUS_SIGNING_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
            "CAMPUS_SIGNING_PKCS11_TOKEN_LABEL": "campus",
            "CAMPUS_SIGNING_TSA_URLS": "http://tsa-a.example/, http://tsa-b.example/",
            "CAMPUS_SIGNING_TRUST_ROOTS": "/etc/campus/roots",
            "CAMPUS_SIGNING_LEVEL": "b-t",
            "CAMPUS_SIGNING_ALLOW_FETCHING": "off",
            "CAMPUS_SIGNING_SEAL_BOX": "1,2,3,4",
            "CAMPUS_SIGNING_PKCS11_PIN": "secret-pin-4711",
        }
    )

    assert config.keys == (
        KeyReference("pkcs12", "/etc/old.p12"),
        KeyReference("pkcs11", "signer-2027"),
    )
    assert config.tsa_urls == ("http://tsa-a.example/", "http://tsa-b.example/")
    assert config.trust_roots == (Path("/etc/campus/roots"),)
    assert config.level is Level.B_T
    assert config.allow_fetching is False
    assert config.seal_box == (1, 2, 3, 4)
    assert config.pkcs11_pin == "secret-pin-4711"
    assert "4711" not in repr(config)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CAMPUS_SIGNING_LEVEL": "B-X"}, "unknown PAdES level"),
        ({"CAMPUS_SIGNING_KEYS": "pkcs11:k"}, "CAMPUS_SIGNING_PKCS11_MODULE"),
        ({"CAMPUS_SIGNING_TIMEOUT_SECONDS": "soon"}, "CAMPUS_SIGNING_TIMEOUT_SECONDS"),
    ],
)
def test_unusable_settings_are_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SigningConfigError, match=named):
        SigningConfig.from_environ(environ)


def test_production_refuses_the_development_pki(tmp_path: Path) -> None:
    with pytest.raises(SigningConfigError) as refused:
        SigningService(SigningConfig(), tmp_path, production=True)

    message = str(refused.value)
    assert "CAMPUS_SIGNING_KEYS" in message
    assert "CAMPUS_SIGNING_TRUST_ROOTS" in message
    assert "CAMPUS_SIGNING_TSA_URLS" in message
    assert not (tmp_path / "signing").exists()


def test_production_accepts_a_full_configuration(tmp_path: Path) -> None:
    config = SigningConfig(
        keys=(KeyReference("pkcs12", "/etc/campus/signer.p12"),),
        trust_roots=(Path("/etc/campus/root.pem"),),
        tsa_urls=("https://tsa.example/",),
    )

    service = SigningService(config, tmp_path, production=True)

    assert service.dev_pki is None


def test_wrong_pkcs12_passphrase_is_a_clear_error(
    pki: DevelopmentPKI, document: bytes, tmp_path: Path
) -> None:
    config = SigningConfig(
        keys=(KeyReference("pkcs12", str(pki.pkcs12_path("rsa"))),),
        pkcs12_passphrase="wrong",
        trust_roots=(pki.certificate_path("root"),),
        tsa_urls=(pki.tsa_url,),
    )

    with pytest.raises(KeyUnavailable, match="CAMPUS_SIGNING_PKCS12_PASSPHRASE"):
        SigningService(config, tmp_path).sign(document)


def test_pkcs12_file_key_signs(
    pki: DevelopmentPKI, document: bytes, tmp_path: Path
) -> None:
    config = SigningConfig(
        keys=(KeyReference("pkcs12", str(pki.pkcs12_path("ecdsa"))),),
        pkcs12_passphrase=pki.passphrase,
        trust_roots=(pki.certificate_path("root"),),
        tsa_urls=(pki.tsa_url,),
    )
    service = SigningService(config, tmp_path)

    assert service.validate(service.sign(document)).ok


def test_missing_token_key_is_a_clear_error(
    softhsm: dict[str, str], pki: DevelopmentPKI, document: bytes, tmp_path: Path
) -> None:
    config = SigningConfig(
        keys=(KeyReference("pkcs11", "no-such-key"),),
        pkcs11_module=softhsm["module"],
        pkcs11_token_label=softhsm["token"],
        pkcs11_pin=softhsm["pin"],
        trust_roots=(pki.certificate_path("root"),),
        tsa_urls=(pki.tsa_url,),
    )

    with pytest.raises(KeyUnavailable, match="no-such-key"):
        SigningService(config, tmp_path).sign(document)


def _closed_port() -> int:
    from signing.devpki import free_port

    return free_port()


def test_unreachable_tsa_is_named(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/tsa"
    service = service_for("development:rsa", tsa_urls=(url,), timeout_seconds=2.0)

    with pytest.raises(TrustServiceUnavailable, match=url):
        service.sign(document, level=Level.B_T)


def test_silent_tsa_times_out(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    import socket

    with socket.socket() as silent:
        # Listens but never answers: the client's read timeout must end the wait.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/tsa"
        service = service_for("development:rsa", tsa_urls=(url,), timeout_seconds=0.5)

        with pytest.raises(TrustServiceUnavailable, match="ReadTimeout"):
            service.sign(document, level=Level.B_T)


def test_second_tsa_is_used_when_the_first_fails(
    service_for: Callable[..., SigningService], document: bytes, pki: DevelopmentPKI
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/tsa"
    service = service_for("development:rsa", tsa_urls=(dead, pki.tsa_url))

    report = service.validate(service.sign(document, level=Level.B_T))

    assert report.ok, report.summary


def test_status_lists_certificates_and_reaches_the_tsa(service: SigningService) -> None:
    status = service.status()

    assert status.ok, status.problems
    roles = [certificate.role for certificate in status.certificates]
    assert roles == ["signer development:rsa", "trust root"]
    assert status.certificates[0].note == "signs now"
    assert status.certificates[0].days_left is not None
    assert status.certificates[0].days_left > 700
    [(url, error, ms)] = status.timestamp_authorities
    assert error is None and ms is not None


def test_status_reports_a_dead_tsa(
    service_for: Callable[..., SigningService],
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/tsa"

    status = service_for(
        "development:rsa", tsa_urls=(url,), timeout_seconds=2.0
    ).status()

    assert not status.ok
    assert any(url in problem for problem in status.problems)


def test_production_b_b_without_tsa_never_makes_a_development_pki(
    pki: DevelopmentPKI, document: bytes, tmp_path: Path
) -> None:
    from signing.errors import SigningError

    config = SigningConfig(
        keys=(KeyReference("pkcs12", str(pki.pkcs12_path("rsa"))),),
        pkcs12_passphrase=pki.passphrase,
        trust_roots=(pki.certificate_path("root"),),
        level=Level.B_B,
    )
    service = SigningService(config, tmp_path, production=True)

    assert service.validate(service.sign(document)).signatures[0].level == "B-B"
    with pytest.raises(SigningError, match="CAMPUS_SIGNING_TSA_URLS"):
        service.sign(document, level=Level.B_T)
    assert not (tmp_path / "signing").exists()


def test_documents_signed_by_a_retired_key_keep_validating(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    before = service_for("development:rsa").sign(document)

    rotated = service_for("development:rsa,development:ecdsa")

    assert "(ecdsa)" in rotated.status().certificates[1].subject
    assert rotated.status().certificates[1].note == "signs now"
    assert rotated.validate(before).ok


def test_no_key_valid_now_is_a_clear_error(
    service_for: Callable[..., SigningService], pki: DevelopmentPKI
) -> None:
    import datetime as dt

    service = service_for("development:rsa,development:ecdsa")
    later = pki.certificate("signer-ecdsa").not_valid_after_utc + dt.timedelta(days=1)

    with pytest.raises(KeyUnavailable, match="no configured signer certificate"):
        service.signer.current_key(later)
