"""Fixtures for signing: one development PKI (and a stranger's) served on loopback,
a SoftHSM2 token with the signer keys, and the documents to sign.

Everything expensive is made once per session (per pytest-xdist worker), in the
worker's own temporary folder: each PKI therefore picks its own free port, so
parallel workers and other people's runs never meet. The services are real HTTP
on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from signing.config import KeyReference, Level, SigningConfig
from signing.devpki import DevelopmentPKI, ensure_served, stop_serving
from signing.service import SigningService

TOKEN_LABEL = "campus-test"


def missing_tool(reason: str) -> None:
    """Skip a test whose outside tool is not installed, except in CI
    (``CAMPUS_TESTS_REQUIRE_TOOLS=1``, set by ``.ci/run``), where a missing
    tool must fail the run rather than quietly drop the SoftHSM2 and pdfsig
    checks."""
    if os.environ.get("CAMPUS_TESTS_REQUIRE_TOOLS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


TOKEN_PIN = "1234"
SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TEXT = "Transcript of records / 成绩单 placeholder: Algorithms A, Databases B+"


def make_pdf(pages: int = 2, text: str = TEXT) -> bytes:
    """A plain document with uncompressed page content, so that tests can find
    and change the text in it."""
    buffer = io.BytesIO()
    drawing = canvas.Canvas(buffer, pagesize=A4, pageCompression=0)
    for number in range(1, pages + 1):
        drawing.setFont("Helvetica", 12)
        drawing.drawString(72, 760, text.encode("ascii", "replace").decode())
        drawing.drawString(72, 740, f"Page {number} of {pages}")
        drawing.showPage()
    drawing.save()
    return buffer.getvalue()


@pytest.fixture(scope="session")
def document() -> bytes:
    return make_pdf()


@pytest.fixture(scope="session")
def signing_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signing")


@pytest.fixture(scope="session")
def pki(signing_folder: Path) -> Iterator[DevelopmentPKI]:
    pki = DevelopmentPKI.ensure(signing_folder / "dev-pki")
    ensure_served(pki)
    yield pki
    stop_serving(pki)


@pytest.fixture(scope="session")
def stranger_pki(signing_folder: Path) -> Iterator[DevelopmentPKI]:
    """Another CA with exactly the same layout and names, but its own keys."""
    pki = DevelopmentPKI.ensure(signing_folder / "stranger-pki")
    ensure_served(pki)
    yield pki
    stop_serving(pki)


@pytest.fixture(scope="session")
def service_for(
    pki: DevelopmentPKI, signing_folder: Path
) -> Callable[..., SigningService]:
    """A signing service per configuration, kept for the session like a process
    keeps its own: ``service_for("development:ecdsa")``."""
    made: dict[tuple[object, ...], SigningService] = {}

    def make(keys: str = "development:rsa", **overrides: object) -> SigningService:
        key = (keys, tuple(sorted(overrides.items())))
        if key not in made:
            config = SigningConfig(
                keys=tuple(KeyReference.parse(entry) for entry in keys.split(",")),
                dev_pki_path=pki.path,
                **overrides,  # type: ignore[arg-type]
            )
            made[key] = SigningService(config, signing_folder / "instance")
        return made[key]

    return make


@pytest.fixture(scope="session")
def service(service_for: Callable[..., SigningService]) -> SigningService:
    return service_for()


@pytest.fixture(scope="session")
def offline_validator(service: SigningService):  # type: ignore[no-untyped-def]
    return service.validator


@pytest.fixture(scope="session")
def signed(service: SigningService, document: bytes) -> Callable[[Level], bytes]:
    """The session document signed by the RSA development key, per level."""
    cache: dict[Level, bytes] = {}

    def sign(level: Level) -> bytes:
        if level not in cache:
            cache[level] = service.sign(document, level=level)
        return cache[level]

    return sign


# -- SoftHSM2 -------------------------------------------------------------------


def _softhsm_module() -> str | None:
    for candidate in SOFTHSM_MODULES:
        if Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def softhsm(pki: DevelopmentPKI, signing_folder: Path) -> Iterator[dict[str, str]]:
    """A SoftHSM2 token in this session's own folder holding the development
    signers' keys and certificates, labelled ``signer-rsa`` and ``signer-ecdsa``.

    SoftHSM2 reads ``SOFTHSM2_CONF`` when the library is first initialised, so it
    is set for the whole session, before anything loads the module.
    """
    module = _softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        missing_tool("needs SoftHSM2: apt-get install softhsm2 (scripts/bootstrap)")
    folder = signing_folder / "softhsm"
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        util = ["softhsm2-util"]
        subprocess.run(
            util
            + [
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--so-pin",
                "0000",
                "--pin",
                TOKEN_PIN,
            ],
            check=True,
            capture_output=True,
        )
        for number, signer in enumerate(("rsa", "ecdsa"), start=1):
            subprocess.run(
                util
                + [
                    "--import",
                    str(pki.key_path(f"signer-{signer}")),
                    "--token",
                    TOKEN_LABEL,
                    "--label",
                    f"signer-{signer}",
                    "--id",
                    f"{number:02x}",
                    "--pin",
                    TOKEN_PIN,
                ],
                check=True,
                capture_output=True,
            )
        _store_certificates(module, pki)
        yield {
            "module": module,
            "token": TOKEN_LABEL,
            "pin": TOKEN_PIN,
            "conf": str(conf),
        }


def _store_certificates(module: str, pki: DevelopmentPKI) -> None:
    """softhsm2-util imports keys only; certificates go in through PKCS#11."""
    from signing.keys import store_certificate_on_token

    config = SigningConfig(
        pkcs11_module=module, pkcs11_token_label=TOKEN_LABEL, pkcs11_pin=TOKEN_PIN
    )
    for number, signer in enumerate(("rsa", "ecdsa"), start=1):
        store_certificate_on_token(
            config,
            f"signer-{signer}",
            pki.certificate(f"signer-{signer}"),
            key_id=bytes([number]),
        )


@pytest.fixture(scope="session")
def token_service_for(
    pki: DevelopmentPKI, softhsm: dict[str, str], signing_folder: Path
) -> Callable[[str], SigningService]:
    """A service signing with a key on the SoftHSM2 token, configured as in
    production: explicit trust root and TSA, no development key."""
    made: dict[str, SigningService] = {}

    def make(label: str) -> SigningService:
        if label not in made:
            config = SigningConfig(
                keys=(KeyReference("pkcs11", label),),
                pkcs11_module=softhsm["module"],
                pkcs11_token_label=softhsm["token"],
                pkcs11_pin=softhsm["pin"],
                trust_roots=(pki.certificate_path("root"),),
                tsa_urls=(pki.tsa_url,),
            )
            made[label] = SigningService(config, signing_folder / "instance")
        return made[label]

    return make


@pytest.fixture(scope="session")
def pdfsig() -> str:
    path = shutil.which("pdfsig")
    if path is None:
        missing_tool("needs poppler's pdfsig: apt-get install poppler-utils")
    return path


def run_pdfsig(pdfsig: str, pdf: bytes, folder: Path, name: str) -> str:
    path = folder / name
    path.write_bytes(pdf)
    # pdfsig's exit code says little (it is non-zero for any invalid signature);
    # the report is what the tests read.
    answer = subprocess.run(
        [pdfsig, str(path)],
        capture_output=True,
        text=True,
        env=os.environ | {"LANG": "C"},
    )
    return answer.stdout + answer.stderr
