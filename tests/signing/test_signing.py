"""Signing and validating at every level, with file keys (RSA, ECDSA) and with
keys on a SoftHSM2 token, and what the validator says about each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from io import BytesIO

import pytest
import requests
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import MDPPerm

from signing.config import Level
from signing.devpki import DevelopmentPKI
from signing.service import SigningService
from signing.validator import Outcome

LEVELS = list(Level)


def assert_valid(report, level: Level, signer: str) -> None:  # type: ignore[no-untyped-def]
    assert report.ok, report.summary
    assert report.exit_code == 0
    certification = report.signatures[0]
    assert certification.kind == "certification signature"
    assert certification.level == level.value
    assert signer in certification.signer
    for name, check in certification.checks.items():
        expected = (
            Outcome.NOT_APPLICABLE
            if name == "timestamp" and level is Level.B_B
            else Outcome.PASSED
        )
        assert check.outcome is expected, (name, check)
    timestamps = [s for s in report.signatures if s.kind == "document timestamp"]
    assert len(timestamps) == (1 if level is Level.B_LTA else 0)
    assert all(ts.ok for ts in timestamps)


@pytest.mark.parametrize("level", LEVELS, ids=[level.value for level in LEVELS])
@pytest.mark.parametrize("key", ["development:rsa", "development:ecdsa"])
def test_file_key_signs_and_validates_at_every_level(
    service_for: Callable[..., SigningService], document: bytes, level: Level, key: str
) -> None:
    service = service_for(key)

    signed = service.sign(document, level=level)
    report = service.validate(signed)

    assert_valid(report, level, f"Document Signer ({key.split(':')[1]})")


@pytest.mark.parametrize("level", LEVELS, ids=[level.value for level in LEVELS])
def test_softhsm_key_signs_and_validates_at_every_level(
    token_service_for: Callable[[str], SigningService], document: bytes, level: Level
) -> None:
    service = token_service_for("signer-rsa")

    signed = service.sign(document, level=level)
    report = service.validate(signed)

    assert_valid(report, level, "Document Signer (rsa)")


def test_softhsm_ecdsa_key_signs_at_b_lta(
    token_service_for: Callable[[str], SigningService], document: bytes
) -> None:
    service = token_service_for("signer-ecdsa")

    report = service.validate(service.sign(document))

    assert_valid(report, Level.B_LTA, "Document Signer (ecdsa)")


def test_b_lta_is_the_default_and_a_no_changes_certification(
    service: SigningService, document: bytes
) -> None:
    signed = service.sign(document)

    reader = PdfFileReader(BytesIO(signed))
    certification = reader.embedded_regular_signatures[0]
    assert certification.docmdp_level is MDPPerm.NO_CHANGES
    assert "/DSS" in reader.root
    assert [s.sig_object_type for s in reader.embedded_signatures] == [
        "/Sig",
        "/DocTimeStamp",
    ]
    assert service.validate(signed).signatures[0].level == "B-LTA"


def test_b_lta_validates_offline_after_the_signer_certificate_expired(
    service: SigningService, signed: Callable[[Level], bytes], pki: DevelopmentPKI
) -> None:
    from signing.devpki import ensure_served, stop_serving

    expired = pki.certificate("signer-rsa").not_valid_after_utc + dt.timedelta(days=1)
    document = signed(Level.B_LTA)

    # No network: the TSA, OCSP responder and CRLs stop answering for the check.
    stop_serving(pki)
    try:
        with pytest.raises(requests.ConnectionError):
            requests.get(pki.tsa_url, timeout=2)
        report = service.validate(document, moment=expired, allow_fetching=False)
    finally:
        ensure_served(pki)

    assert report.ok, report.summary
    certification = report.signatures[0]
    assert certification.signing_time is not None
    assert certification.signing_time < expired - dt.timedelta(days=365)
    assert certification.signing_time_source == "timestamp"


def test_b_lt_without_archive_timestamp_does_not_outlive_the_signer(
    service: SigningService, signed: Callable[[Level], bytes], pki: DevelopmentPKI
) -> None:
    expired = pki.certificate("signer-rsa").not_valid_after_utc + dt.timedelta(days=1)

    report = service.validate(signed(Level.B_LT), moment=expired, allow_fetching=False)

    assert not report.ok
    assert report.signatures[0].chain.outcome is not Outcome.PASSED


def test_b_lt_validates_offline_today(
    service: SigningService, signed: Callable[[Level], bytes]
) -> None:
    report = service.validate(signed(Level.B_LT), allow_fetching=False)

    assert report.ok, report.summary


def test_b_b_offline_cannot_establish_revocation(
    service: SigningService, signed: Callable[[Level], bytes]
) -> None:
    report = service.validate(signed(Level.B_B), allow_fetching=False)

    assert not report.ok
    assert report.exit_code == 1


def test_visible_seal_on_the_chosen_page(
    service: SigningService, document: bytes, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from signing.signer import Seal

    image = tmp_path / "seal.png"
    Image.new("RGB", (120, 120), (200, 20, 20)).save(image)

    signed = service.sign(document, seal=Seal(image, page=-1, box=(400, 50, 520, 170)))

    reader = PdfFileReader(BytesIO(signed))
    field = reader.embedded_regular_signatures[0].sig_field
    assert [float(x) for x in field["/Rect"]] == [400, 50, 520, 170]
    last_page = reader.root["/Pages"]["/Kids"].raw_get(1).reference
    assert field.raw_get("/P").reference == last_page
    assert "/AP" in field
    assert service.validate(signed).ok


def test_keys_and_revocation_answers_are_reused_across_documents(
    service_for: Callable[..., SigningService], document: bytes, pki: DevelopmentPKI
) -> None:
    from signing import devpki

    service = service_for("development:rsa", revocation_cache_seconds=3600)
    service.sign(document)
    server = devpki._served[pki.path.resolve()]
    counts = dict(server.app.requests)

    service.sign(document)

    after = server.app.requests
    assert after["/ocsp"] == counts["/ocsp"]
    assert after["/crl/root.crl"] == counts["/crl/root.crl"]
    assert after["/tsa"] == counts["/tsa"] + 2  # signature and archive timestamps
    assert service.keys[0].signer is service.keys[0].signer


def test_newest_valid_key_signs(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    service = service_for("development:rsa,development:ecdsa")

    report = service.validate(service.sign(document, level=Level.B_B))

    assert "(ecdsa)" in report.signatures[0].signer


def test_threads_sign_at_the_same_time(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # A fresh service, so that all threads start with nothing cached and fetch
    # the same revocation answers at the same time, as a busy server would.
    service = service_for("development:rsa", revocation_cache_seconds=301)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: service.sign(document), range(4)))

    assert all(service.validate(signed).ok for signed in results)


def test_signing_recovers_when_the_trust_services_come_back(
    pki: DevelopmentPKI, document: bytes, signing_folder
) -> None:  # type: ignore[no-untyped-def]
    from signing.config import KeyReference, SigningConfig
    from signing.devpki import ensure_served, stop_serving
    from signing.errors import TrustServiceUnavailable

    config = SigningConfig(
        keys=(KeyReference("pkcs12", str(pki.pkcs12_path("rsa"))),),
        pkcs12_passphrase=pki.passphrase,
        trust_roots=(pki.certificate_path("root"),),
        tsa_urls=(pki.tsa_url,),
        timeout_seconds=2.0,
    )
    service = SigningService(config, signing_folder / "recovering")
    stop_serving(pki)
    try:
        with pytest.raises(TrustServiceUnavailable):
            service.sign(document, level=Level.B_LT)
    finally:
        ensure_served(pki)

    assert service.validate(service.sign(document, level=Level.B_LT)).ok


def test_threads_validate_at_the_same_time(
    service_for: Callable[..., SigningService], signed: Callable[[Level], bytes]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    service = service_for("development:rsa", max_signatures=15)
    files = [signed(level) for level in (Level.B_LT, Level.B_LTA)] * 3

    with ThreadPoolExecutor(max_workers=6) as pool:
        reports = list(
            pool.map(lambda pdf: service.validate(pdf, allow_fetching=False), files)
        )

    assert all(report.ok for report in reports), [r.summary for r in reports]
