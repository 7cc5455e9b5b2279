"""Files that must not pass: changed bytes, changes appended after signing, a
stranger's CA, a revoked signer, and files that are not signed PDFs at all."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from signing.config import KeyReference, Level, SigningConfig
from signing.devpki import DevelopmentPKI
from signing.errors import SignerCertificateRejected
from signing.service import SigningService
from signing.validator import Outcome
from tests.signing import tampering


@pytest.mark.parametrize("level", [Level.B_B, Level.B_LTA], ids=["B-B", "B-LTA"])
def test_one_flipped_byte_is_not_intact(
    service: SigningService, signed: Callable[[Level], bytes], level: Level
) -> None:
    changed = tampering.flip_byte_in_text(signed(level))

    report = service.validate(changed)

    assert not report.ok
    assert report.exit_code == 1
    assert report.signatures[0].intact.outcome is Outcome.FAILED
    assert "digest" in report.signatures[0].intact.detail
    assert "intact" in report.summary


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (tampering.add_page, "page tree"),
        (tampering.change_text, "unexplained"),
        (tampering.add_annotation, "annotations"),
        (tampering.add_form_field, "remark"),
    ],
    ids=["new page", "changed text", "annotation", "form field"],
)
def test_incremental_update_after_signing_is_refused_with_the_reason(
    service: SigningService,
    signed: Callable[[Level], bytes],
    change: Callable[[bytes], bytes],
    reason: str,
) -> None:
    original = signed(Level.B_LTA)
    changed = change(original)
    assert changed.startswith(original)  # appended, the signed bytes untouched

    report = service.validate(changed)

    assert not report.ok
    certification = report.signatures[0]
    assert certification.intact.outcome is Outcome.PASSED
    assert certification.modifications.outcome is Outcome.FAILED
    assert reason in certification.modifications.detail
    assert certification.coverage.outcome is Outcome.FAILED
    assert "modifications" in report.summary
    assert reason in report.summary


def test_signature_from_another_ca_with_the_same_layout_is_untrusted(
    service: SigningService,
    stranger_pki: DevelopmentPKI,
    signing_folder,  # type: ignore[no-untyped-def]
    document: bytes,
) -> None:
    stranger = SigningService(
        SigningConfig(dev_pki_path=stranger_pki.path), signing_folder / "stranger"
    )
    forged = stranger.sign(document)
    assert stranger.validate(forged).ok  # sound by its own root

    report = service.validate(forged)

    assert not report.ok
    certification = report.signatures[0]
    assert certification.intact.outcome is Outcome.PASSED
    assert certification.chain.outcome is Outcome.FAILED
    assert "trust root" in certification.chain.detail
    assert certification.signer == stranger.validate(forged).signatures[0].signer


def test_revoked_signer_is_refused(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    revoked = service_for("development:revoked")
    signed = revoked.sign(document, level=Level.B_T)

    report = revoked.validate(signed)

    assert not report.ok
    certification = report.signatures[0]
    assert certification.revocation.outcome is Outcome.FAILED
    assert "revoked" in certification.revocation.detail


def test_revoked_signer_cannot_make_long_term_signatures(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    revoked = service_for("development:revoked")

    with pytest.raises(SignerCertificateRejected, match="revoked"):
        revoked.sign(document, level=Level.B_LTA)


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "not a readable PDF"),
        (b"GIF89a garbage that is no PDF at all", "not a readable PDF"),
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n", "incomplete"),
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n%%EOF\n", "not a readable PDF"),
    ],
    ids=["empty", "garbage", "header only", "no xref"],
)
def test_garbage_is_a_clear_answer_not_an_exception(
    service: SigningService, content: bytes, detail: str
) -> None:
    report = service.validate(content)

    assert not report.ok
    assert report.exit_code == 2
    assert report.parses.outcome is Outcome.FAILED
    assert detail in report.parses.detail


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9, 0.99])
def test_truncated_signed_file_is_a_clear_answer(
    service: SigningService, signed: Callable[[Level], bytes], fraction: float
) -> None:
    whole = signed(Level.B_LTA)

    report = service.validate(whole[: int(len(whole) * fraction)])

    assert not report.ok
    assert report.summary.startswith("not valid")


def test_unsigned_pdf_is_not_valid(service: SigningService, document: bytes) -> None:
    report = service.validate(document)

    assert not report.ok
    assert report.parses.outcome is Outcome.PASSED
    assert "no signature" in report.summary


def test_oversized_file_is_refused_unread(
    service_for: Callable[..., SigningService], signed: Callable[[Level], bytes]
) -> None:
    small = service_for("development:rsa", max_document_bytes=1000)

    report = small.validate(signed(Level.B_B))

    assert not report.ok
    assert "limit" in report.parses.detail


def test_validation_never_alters_its_input(
    service: SigningService, signed: Callable[[Level], bytes]
) -> None:
    document = bytearray(signed(Level.B_LT))
    before = bytes(document)

    service.validate(bytes(document))

    assert bytes(document) == before


def test_untrusted_configuration_key_reference_is_refused() -> None:
    with pytest.raises(Exception, match="CAMPUS_SIGNING_KEYS"):
        KeyReference.parse("hsm:somewhere")


def test_validation_stops_when_its_time_is_spent(
    service_for: Callable[..., SigningService], signed: Callable[[Level], bytes]
) -> None:
    hurried = service_for("development:rsa", max_validation_seconds=0.0)

    report = hurried.validate(signed(Level.B_LTA))

    assert not report.ok
    assert "CAMPUS_SIGNING_MAX_VALIDATION_SECONDS" in report.summary


def test_too_many_signatures_are_not_validated(
    service_for: Callable[..., SigningService], signed: Callable[[Level], bytes]
) -> None:
    strict = service_for("development:rsa", max_signatures=1)

    report = strict.validate(signed(Level.B_LTA))

    assert not report.ok
    assert "limit of 1" in report.parses.detail


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"GIF89a not a pdf", "not a readable PDF"),
        (b"%PDF-1.7\n%%EOF\n", "not a readable PDF"),
    ],
    ids=["garbage", "empty pdf"],
)
def test_signing_garbage_is_a_clear_error(
    service: SigningService, content: bytes, reason: str
) -> None:
    from signing.errors import DocumentUnreadable

    with pytest.raises(DocumentUnreadable, match=reason):
        service.sign(content)


def test_signing_a_signed_document_is_refused(
    service: SigningService, signed: Callable[[Level], bytes]
) -> None:
    from signing.errors import DocumentUnreadable

    with pytest.raises(DocumentUnreadable, match="already signed"):
        service.sign(signed(Level.B_B))


def test_signing_an_oversized_document_is_refused(
    service_for: Callable[..., SigningService], document: bytes
) -> None:
    from signing.errors import DocumentUnreadable

    with pytest.raises(DocumentUnreadable, match="CAMPUS_SIGNING_MAX_DOCUMENT_BYTES"):
        service_for("development:rsa", max_document_bytes=100).sign(document)
