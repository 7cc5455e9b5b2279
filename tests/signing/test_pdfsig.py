"""A second opinion: poppler's ``pdfsig`` on what we sign.

poppler (Debian 12's 22.12) verifies CAdES signatures but cannot verify RFC 3161
document timestamps ("Unimplemented Feature ... Unable to validate this type of
signature"); for those it is only asked not to call them invalid.

Its certificate verdict comes from NSS. Given an NSS database that trusts our
development root (``certutil``, Debian ``libnss3-tools``), it calls the signer
trusted with ``-no-ocsp``. With OCSP on, NSS (3.87) refuses the chain: after
asking our responder about the signer only (GET, then POST), ``vfychain -m ocsp``
reports SEC_ERROR_REVOKED_CERTIFICATE on the root. Finding out why would take
NSS's debug logs (``NSS_DEBUG_PKIX``) and probably an OCSP answer shaped the way
NSS expects; pyHanko and our validator accept the responder's answers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from signing.config import Level
from signing.devpki import DevelopmentPKI
from signing.service import SigningService
from tests.signing import tampering
from tests.signing.conftest import missing_tool, run_pdfsig

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


@pytest.fixture(scope="session")
def nss_database(pki: DevelopmentPKI, signing_folder: Path) -> str:
    """An NSS database trusting the development root, as a Linux desktop whose
    administrator installed it would."""
    certutil = shutil.which("certutil")
    if certutil is None:
        missing_tool("needs NSS's certutil: apt-get install libnss3-tools")
    folder = signing_folder / "nss"
    folder.mkdir()
    database = f"sql:{folder}"
    subprocess.run(
        [certutil, "-N", "-d", database, "--empty-password"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            certutil,
            "-A",
            "-d",
            database,
            "-n",
            "campus-dev-root",
            "-t",
            "CT,C,C",
            "-i",
            str(pki.certificate_path("root")),
        ],
        check=True,
        capture_output=True,
    )
    return database


@pytest.mark.parametrize("key", ["development:rsa", "development:ecdsa"])
def test_pdfsig_trusts_our_signer_when_nss_trusts_our_root(
    pdfsig: str,
    nss_database: str,
    service_for: Callable[..., SigningService],
    document: bytes,
    tmp_path: Path,
    key: str,
) -> None:
    path = tmp_path / "signed.pdf"
    path.write_bytes(service_for(key).sign(document))

    answer = subprocess.run(
        [pdfsig, "-nssdir", nss_database, "-no-ocsp", str(path)],
        capture_output=True,
        text=True,
    )

    assert "Certificate Validation: Certificate is Trusted." in answer.stdout, (
        answer.stdout
    )


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
