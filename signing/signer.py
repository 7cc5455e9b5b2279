"""The PAdES signer: a certification signature that allows no changes but LTV data.

Every document gets one certification signature (DocMDP ``/P 1``, "no changes").
PAdES (ETSI EN 319 142-1, 5.4) and pyHanko both count additions to the document
security store and document timestamps as not changing the document, so B-LT and
B-LTA data can follow it, and validators that honour DocMDP refuse anything else.

What is kept across documents in one process, and why:

- the parsed key (``signing.keys``): 150 ms to open a PKCS#12 file, 30 ms or more
  to parse an RSA key, which pyHanko's stock signer does for every signature;
- the timestamp client: pyHanko asks the TSA for a sample token once per client to
  size the signature, and validates the TSA's chain with it;
- OCSP answers and CRLs (``RevocationCache``), for ``revocation_cache_seconds``;
- the space to reserve for the signature container, measured on the first
  document per key and level, so later documents skip pyHanko's trial signature.

Every call out (TSA, OCSP, CRL) has ``timeout_seconds``; failures surface as
``signing.errors.TrustServiceUnavailable`` naming the URL.

TODO: a B-LTA file stays verifiable until its TSA's certificate expires (12 years
for the development TSA). Keeping files verifiable beyond that needs archive
renewal: a job adding a fresh document timestamp (pyHanko's
``PdfTimeStamper.update_archival_timestamp_chain``) to every stored file some
years before the last one's TSA certificate expires. It belongs with the
registry of issued files, which is not in this package.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import requests
from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
from pyhanko.sign.timestamps import TimeStamper, TimestampRequestError
from pyhanko.sign.timestamps.common_utils import set_tsp_headers
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.fetchers.api import Fetchers
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend

from signing.config import Level
from signing.errors import (
    DocumentUnreadable,
    KeyUnavailable,
    SignerCertificateRejected,
    SigningError,
    TrustServiceUnavailable,
    translated,
)
from signing.keys import SigningKey
from signing.validator import CLOCK_TOLERANCE

logger = logging.getLogger(__name__)

SIGNATURE_FIELD = "CampusSeal"
DIGEST = "sha256"


@dataclasses.dataclass(frozen=True)
class Seal:
    """A visible seal: an image drawn in the signature field's box."""

    image: Path
    """PNG or JPEG."""

    page: int = 0
    """0 is the first page, -1 the last."""

    box: tuple[int, int, int, int] = (420, 40, 540, 160)
    """``x1, y1, x2, y2`` in points from the page's bottom left."""


class Timestamper(TimeStamper):
    """An RFC 3161 client over one ``requests`` session, trying each TSA in turn.

    pyHanko's own clients open a new HTTP session (and, for the aiohttp one, a new
    TLS context) per request; this one keeps connections (one session per thread,
    as ``requests`` sessions are not made for sharing) and says which TSA failed.
    """

    def __init__(self, urls: tuple[str, ...], timeout: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # untyped in pyHanko
        if not urls:
            raise SigningError("no timestamp authority configured")
        self.urls = urls
        self.timeout = timeout
        self._local = threading.local()

    @property
    def _http(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session  # type: ignore[no-any-return]

    async def async_request_tsa_response(
        self, req: tsp.TimeStampReq
    ) -> tsp.TimeStampResp:
        import asyncio

        return await asyncio.to_thread(self._request, req.dump())

    def _request(self, body: bytes) -> tsp.TimeStampResp:
        failures = []
        for url in self.urls:
            try:
                answer = self._http.post(
                    url,
                    data=body,
                    headers=set_tsp_headers({}),
                    timeout=self.timeout,
                )
            except requests.RequestException as error:
                failures.append(f"{url}: {type(error).__name__}")
                logger.warning(
                    "tsa_unreachable", extra={"url": url, "error": type(error).__name__}
                )
                continue
            content_type = answer.headers.get("Content-Type", "")
            if answer.status_code != 200 or not content_type.startswith(
                "application/timestamp-reply"
            ):
                failures.append(f"{url}: HTTP {answer.status_code} {content_type}")
                logger.warning(
                    "tsa_bad_answer", extra={"url": url, "status": answer.status_code}
                )
                continue
            return tsp.TimeStampResp.load(answer.content)
        raise TimestampRequestError(
            "no timestamp authority answered: " + "; ".join(failures)
        )


class RevocationCache:
    """OCSP answers, CRLs and issuer certificates fetched while signing, shared by
    the documents signed within ``ttl_seconds``, then fetched afresh.

    pyhanko-certvalidator's fetchers remember every answer they fetched; keeping
    one set of fetchers across validation contexts is what shares them. They
    also remember failures, so ``clear`` drops them after a failed signature.
    Not for use by two threads at once: a fetch in progress is awaited through
    an asyncio event of the loop that started it (``DocumentSigner`` signs one
    document at a time).
    """

    def __init__(self, timeout: float, ttl_seconds: float) -> None:
        self._backend = RequestsFetcherBackend(per_request_timeout=timeout)
        self._ttl = ttl_seconds
        self._fetchers: Fetchers | None = None
        self._made_at = 0.0

    def fetchers(self) -> Fetchers:
        now = time.monotonic()
        if self._fetchers is None or now - self._made_at >= self._ttl:
            self._fetchers = self._backend.get_fetchers()
            self._made_at = now
        return self._fetchers

    def clear(self) -> None:
        self._fetchers = None


class DocumentSigner:
    """Signs PDF bytes with the newest configured key that is valid now.

    One document at a time per signer: asn1crypto parses certificates lazily and
    is not safe to share between threads, and pyHanko shares them through the
    signer, the timestamp client and the trust roots (two threads signing at once
    fail with KeyErrors deep in asn1crypto). TODO: to sign in parallel, give each
    thread its own copies of those objects, made from their DER bytes (cheap),
    and its own ``RevocationCache``; the parsed private key can be shared.
    """

    def __init__(
        self,
        keys: list[SigningKey],
        trust_roots: list[asn1_x509.Certificate],
        tsa_urls: tuple[str, ...],
        *,
        level: Level = Level.B_LTA,
        timeout: float = 10.0,
        revocation_cache_seconds: float = 300,
        seal: Seal | None = None,
        max_document_bytes: int = 32 * 1024 * 1024,
        before_use: Callable[[], None] = lambda: None,
    ) -> None:
        self.keys = keys
        self.trust_roots = trust_roots
        self.level = level
        self.seal = seal
        self.max_document_bytes = max_document_bytes
        self.timestamper = Timestamper(tsa_urls, timeout) if tsa_urls else None
        self.revocation = RevocationCache(timeout, revocation_cache_seconds)
        self._before_use = before_use
        self._reserved: dict[tuple[str, Level], int] = {}
        # Re-entrant, so that status reports and ``current_key`` can hold it too.
        self.one_at_a_time = threading.RLock()

    def current_key(self, moment: dt.datetime | None = None) -> SigningKey:
        """The newest key (last listed) whose certificate is valid at ``moment``."""
        moment = moment or dt.datetime.now(dt.UTC)
        with self.one_at_a_time:
            for key in reversed(self.keys):
                if key.valid_at(moment):
                    return key
            validity = ", ".join(
                f"{key.reference} until {key.not_after:%Y-%m-%d}" for key in self.keys
            )
        raise KeyUnavailable(
            f"no configured signer certificate is valid now: {validity}"
        )

    def sign(
        self,
        pdf: bytes,
        *,
        level: Level | None = None,
        seal: Seal | None = None,
        reason: str | None = None,
        location: str | None = None,
    ) -> bytes:
        """Certify ``pdf`` at ``level`` (default: the configured one) and return
        the signed file. ``seal`` overrides the configured visible seal."""
        level = level or self.level
        seal = seal or self.seal
        if len(pdf) > self.max_document_bytes:
            raise DocumentUnreadable(
                f"the document has {len(pdf)} bytes; the limit is "
                f"{self.max_document_bytes} (CAMPUS_SIGNING_MAX_DOCUMENT_BYTES)"
            )
        if level is not Level.B_B and self.timestamper is None:
            raise SigningError(
                f"{level.value} needs a TSA: set CAMPUS_SIGNING_TSA_URLS"
            )
        started = time.perf_counter()
        self._before_use()
        with self.one_at_a_time:
            key = self.current_key()
            result = self._sign(pdf, key, level, seal, reason, location)
        logger.info(
            "document_signed",
            extra={
                "level": level.value,
                "key": str(key.reference),
                "bytes": len(result),
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return result

    def _sign(
        self,
        pdf: bytes,
        key: SigningKey,
        level: Level,
        seal: Seal | None,
        reason: str | None,
        location: str | None,
    ) -> bytes:
        try:
            with translated("sign"):
                writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
                if writer.prev.encrypted:
                    raise DocumentUnreadable("the document is encrypted")
                if writer.prev.embedded_signatures:
                    # A certification must be the first signature, and ours
                    # allows nothing after it.
                    raise DocumentUnreadable(
                        "the document is already signed; sign the unsigned original"
                    )
                pdf_signer = self._pdf_signer(key, level, seal, reason, location)
                reserved = self._reserved.get((str(key.reference), level))
                with key.using():
                    signed = pdf_signer.sign_pdf(writer, bytes_reserved=reserved)
        except (TrustServiceUnavailable, SignerCertificateRejected):
            # The cache keeps failed fetches too; the next document must retry.
            self.revocation.clear()
            raise
        result = bytes(signed.getvalue())
        if reserved is None:
            self._reserved[(str(key.reference), level)] = _reservation_for(result)
        return result

    def _pdf_signer(
        self,
        key: SigningKey,
        level: Level,
        seal: Seal | None,
        reason: str | None,
        location: str | None,
    ) -> signers.PdfSigner:
        long_term = level.rank >= Level.B_LT.rank
        validation_context = None
        if long_term:
            validation_context = ValidationContext(
                trust_roots=self.trust_roots,
                allow_fetching=True,
                fetchers=self.revocation.fetchers(),
                time_tolerance=CLOCK_TOLERANCE,
            )
        metadata = signers.PdfSignatureMetadata(
            field_name=SIGNATURE_FIELD,
            md_algorithm=DIGEST,
            certify=True,
            docmdp_permissions=MDPPerm.NO_CHANGES,
            subfilter=SigSeedSubFilter.PADES,
            embed_validation_info=long_term,
            use_pades_lta=level is Level.B_LTA,
            validation_context=validation_context,
            reason=reason,
            location=location,
        )
        field_spec = stamp_style = None
        if seal is not None:
            from pyhanko.pdf_utils.images import PdfImage
            from pyhanko.stamp import StaticStampStyle

            field_spec = fields.SigFieldSpec(
                SIGNATURE_FIELD, on_page=seal.page, box=seal.box
            )
            stamp_style = StaticStampStyle(
                background=PdfImage(str(seal.image)), border_width=0
            )
        return signers.PdfSigner(
            metadata,
            key.signer,
            timestamper=self.timestamper if level is not Level.B_B else None,
            new_field_spec=field_spec,
            stamp_style=stamp_style,
        )


def _reservation_for(signed: bytes) -> int:
    """Bytes to reserve for later signature containers like the one in
    ``signed``: its size in hex, plus half again for timestamps that come out
    longer next time (pyHanko's own margin)."""
    reader = PdfFileReader(BytesIO(signed), strict=False)
    first = reader.embedded_signatures[0]
    in_hex = 2 * len(cms.ContentInfo.load(first.pkcs7_content).dump())
    return in_hex + 2 * (in_hex // 4)
