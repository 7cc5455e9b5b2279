"""A second opinion: poppler's ``pdfsig`` on what we sign.

poppler (Debian 12's 22.12) verifies CAdES signatures but cannot verify RFC 3161
document timestamps ("Unimplemented Feature ... Unable to validate this type of
signature"); for those it is only asked not to call them invalid. It does not
know our development root, so its certificate verdict is not checked either.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from signing.config import Level
from signing.service import SigningService
from tests.signing import tampering
from tests.signing.conftest import run_pdfsig

LEVELS = list(Level)


def verdicts(report: str) -> list[tuple[str, str]]:
    """``(signature type, validation verdict)`` per signature in the report."""
    blocks = re.split(r"^Signature #\d+:", report, flags=re.MULTILINE)[1:]
    found = []
    for block in blocks:
        kind = re.search(r"Signature Type: (.+)", block)
        verdict = re.search(r"Signature Validation: (.+)", block)
        found.append(
            (
                kind.group(1).strip() if kind else "",
                verdict.group(1).strip() if verdict else "",
            )
        )
    return found


@pytest.mark.parametrize("level", LEVELS, ids=[level.value for level in LEVELS])
@pytest.mark.parametrize("key", ["development:rsa", "development:ecdsa"])
def test_pdfsig_reports_our_signatures_valid(
    pdfsig: str,
    service_for: Callable[..., SigningService],
    document: bytes,
    tmp_path,  # type: ignore[no-untyped-def]
    level: Level,
    key: str,
) -> None:
    signed = service_for(key).sign(document, level=level)

    report = run_pdfsig(pdfsig, signed, tmp_path, "signed.pdf")

    found = verdicts(report)
    assert found, report
    cades = [verdict for kind, verdict in found if kind == "ETSI.CAdES.detached"]
    assert cades == ["Signature is Valid."], report
    others = [verdict for kind, verdict in found if kind != "ETSI.CAdES.detached"]
    assert len(others) == (1 if level is Level.B_LTA else 0), report
    assert all("Invalid" not in v and "Mismatch" not in v for v in others), report


def test_pdfsig_reports_a_flipped_byte_as_digest_mismatch(
    pdfsig: str,
    signed: Callable[[Level], bytes],
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    changed = tampering.flip_byte_in_text(signed(Level.B_LTA))

    report = run_pdfsig(pdfsig, changed, tmp_path, "changed.pdf")

    cades = [v for kind, v in verdicts(report) if kind == "ETSI.CAdES.detached"]
    assert cades == ["Digest Mismatch."], report


def test_pdfsig_reports_softhsm_signatures_valid(
    pdfsig: str,
    token_service_for: Callable[[str], SigningService],
    document: bytes,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    for label in ("signer-rsa", "signer-ecdsa"):
        signed = token_service_for(label).sign(document)

        report = run_pdfsig(pdfsig, signed, tmp_path, f"{label}.pdf")

        cades = [v for kind, v in verdicts(report) if kind == "ETSI.CAdES.detached"]
        assert cades == ["Signature is Valid."], report
