"""Signing throughput and validation time, against pyHanko used the stock way.

Run ``python bench/signing.py`` (or ``--quick``, under a minute). It makes a
development PKI in a temporary folder, serves its TSA, OCSP and CRLs on loopback,
and then, in the same run and process, on the same 2-page document:

- signs at B-T and B-LTA with our ``DocumentSigner`` (key, TSA client and
  revocation answers kept across documents), and with pyHanko's stock signer set
  up per document as its documentation shows: ``SimpleSigner.load_pkcs12_data``,
  a new ``RequestsHTTPTimeStamper`` and a new ``ValidationContext`` with fetching,
  the same PKCS#12 file, TSA and revocation services;
- validates the B-LTA file offline with our ``DocumentValidator`` and with a bare
  call of pyHanko's ``ades_lta_validation`` under the same policy.

Goals (issue 7): our B-LTA throughput at least 2x the stock signer's; our
validation at most 1.2x the bare call. Every figure is printed; the last line is
one JSON object about the B-LTA goal, with ``ratio`` = ours / (2 x stock), so at
least 1 means the goal is met. Numbers are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter  # noqa: E402
from pyhanko.pdf_utils.reader import PdfFileReader  # noqa: E402
from pyhanko.sign import signers  # noqa: E402
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter  # noqa: E402
from pyhanko.sign.timestamps.requests_client import (  # noqa: E402
    RequestsHTTPTimeStamper,
)
from pyhanko.sign.validation.ades import ades_lta_validation  # noqa: E402
from pyhanko_certvalidator import ValidationContext  # noqa: E402
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo  # noqa: E402
from reportlab.lib.pagesizes import A4  # noqa: E402
from reportlab.pdfgen import canvas  # noqa: E402

from signing import QUIET_LOGGERS  # noqa: E402
from signing.config import Level, SigningConfig  # noqa: E402
from signing.devpki import DevelopmentPKI, ensure_served, stop_serving  # noqa: E402
from signing.keys import asn1_certificate  # noqa: E402
from signing.service import SigningService  # noqa: E402


def two_page_document() -> bytes:
    buffer = io.BytesIO()
    drawing = canvas.Canvas(buffer, pagesize=A4)
    for page in (1, 2):
        drawing.drawString(72, 760, "Transcript of records: Algorithms A, Databases B+")
        drawing.drawString(72, 740, f"Page {page} of 2")
        drawing.showPage()
    drawing.save()
    return buffer.getvalue()


def stock_signer(pki: DevelopmentPKI, level: Level) -> Callable[[bytes], bytes]:
    """pyHanko's signer, everything set up again for each document."""
    root = asn1_certificate(pki.certificate("root"))

    def sign(pdf: bytes) -> bytes:
        signer = signers.SimpleSigner.load_pkcs12_data(
            pki.pkcs12_path("rsa").read_bytes(), [], pki.passphrase.encode()
        )
        long_term = level is Level.B_LTA
        metadata = signers.PdfSignatureMetadata(
            field_name="Signature",
            md_algorithm="sha256",
            certify=True,
            docmdp_permissions=MDPPerm.NO_CHANGES,
            subfilter=SigSeedSubFilter.PADES,
            embed_validation_info=long_term,
            use_pades_lta=long_term,
            validation_context=(
                ValidationContext(trust_roots=[root], allow_fetching=True)
                if long_term
                else None
            ),
        )
        timestamper = RequestsHTTPTimeStamper(pki.tsa_url, timeout=10)
        out = signers.PdfSigner(metadata, signer, timestamper=timestamper).sign_pdf(
            IncrementalPdfFileWriter(io.BytesIO(pdf))
        )
        return bytes(out.getvalue())

    return sign


def interleaved(
    first: Callable[[], object], second: Callable[[], object], rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of each, taking turns, so that both meet the same load
    on a shared machine. One warm-up call each first."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for run, into in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            run()
            into.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    documents = 4 if args.quick else 20
    validations = 9 if args.quick else 31
    logging.basicConfig(level=logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)

    with tempfile.TemporaryDirectory(prefix="bench-signing-") as folder:
        pki = DevelopmentPKI.ensure(Path(folder) / "dev-pki")
        ensure_served(pki)
        service = SigningService(
            SigningConfig(dev_pki_path=pki.path), Path(folder) / "instance"
        )
        pdf = two_page_document()
        figures: dict[str, float] = {}
        for level in (Level.B_T, Level.B_LTA):
            stock_sign = stock_signer(pki, level)
            ours_times, stock_times = interleaved(
                lambda level=level: service.sign(pdf, level=level),
                lambda sign=stock_sign: sign(pdf),
                documents,
            )
            ours = len(ours_times) / sum(ours_times)
            stock = len(stock_times) / sum(stock_times)
            figures[f"{level.value} ours"] = ours
            figures[f"{level.value} stock"] = stock
            print(
                f"sign {level.value}: ours {ours:.2f} docs/s, pyHanko stock "
                f"{stock:.2f} docs/s, ratio {ours / stock:.2f}"
            )

        signed = service.sign(pdf, level=Level.B_LTA)
        validator = service.validator
        spec = validator.specification(False)

        def bare() -> object:
            reader = PdfFileReader(io.BytesIO(signed), strict=False)
            signature = reader.embedded_regular_signatures[0]
            signature.compute_integrity_info(diff_policy=spec.diff_policy)
            now = dt.datetime.now(dt.UTC)
            return asyncio.run(
                ades_lta_validation(
                    signature,
                    spec,
                    timing_info=ValidationTimingInfo(now, now, False),
                )
            )

        assert validator.validate(signed, allow_fetching=False).ok
        ours_times, bare_times = interleaved(
            lambda: validator.validate(signed, allow_fetching=False), bare, validations
        )
        ours_s = statistics.median(ours_times)
        bare_s = statistics.median(bare_times)
        print(
            f"validate B-LTA offline: ours {ours_s * 1000:.1f} ms, bare pyHanko "
            f"ades_lta_validation {bare_s * 1000:.1f} ms, ratio {ours_s / bare_s:.2f} "
            "(goal <= 1.2)"
        )
        stop_serving(pki)

    ours_lta = figures["B-LTA ours"]
    goal = 2 * figures["B-LTA stock"]
    print(
        json.dumps(
            {
                "metric": "b_lta_signing_throughput",
                "value": round(ours_lta, 3),
                "unit": "documents/s",
                "limit": "2 x pyHanko stock signer set up per document, B-LTA, "
                "same key, TSA and revocation services, same run",
                "limit_value": round(goal, 3),
                "ratio": round(ours_lta / goal, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
