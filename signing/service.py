"""The signing service of one process: configuration in, signer and validator out.

``SigningService`` is what the app keeps in ``app.extensions["campus.signing"]``
and what other packages call. It builds its parts on first use, not when the app
is created: the development PKI (when the configuration relies on it), its trust
services on loopback, the keys, the signer and the validator. Creating the app
therefore costs nothing; the first signature on a fresh checkout makes the PKI
(about two seconds) and starts serving it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from asn1crypto import x509 as asn1_x509

from signing import devpki
from signing.config import Level, SigningConfig
from signing.errors import SigningError, translated
from signing.keys import SigningKey, asn1_certificate, build_keys, load_certificates
from signing.signer import DocumentSigner, Seal, Timestamper
from signing.validator import DocumentValidator, ValidationReport
from signing.workers import ValidatorRecipe

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class CertificateStatus:
    role: str
    subject: str
    not_after: dt.datetime | None
    note: str = ""

    @property
    def days_left(self) -> int | None:
        if self.not_after is None:
            return None
        return (self.not_after - dt.datetime.now(dt.UTC)).days


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """What ``flask signing status`` shows."""

    certificates: list[CertificateStatus]
    timestamp_authorities: list[tuple[str, str | None, float | None]]
    """``(url, error or None, milliseconds)`` per TSA."""

    development_pki: str | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class SigningService:
    """Signer, validator and their configuration, built on first use."""

    def __init__(
        self, config: SigningConfig, instance_path: Path, production: bool = False
    ) -> None:
        if production:
            config.check_production()
        self.config = config
        self.instance_path = instance_path
        self.production = production
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {}

    def _part(self, name: str, make: Callable[[], T]) -> T:
        """The part called ``name``, made by ``make`` the first time."""
        with self._lock:
            if name not in self._parts:
                self._parts[name] = make()
            return cast(T, self._parts[name])

    # -- parts ------------------------------------------------------------------

    @property
    def dev_pki_path(self) -> Path:
        return self.config.dev_pki_path or self.instance_path / "signing" / "dev-pki"

    @property
    def dev_pki(self) -> devpki.DevelopmentPKI | None:
        """The development PKI, made now if the configuration relies on it.
        Never in production (the configuration check refuses it there)."""
        if self.production or not self.config.uses_development_pki:
            return None
        return self._part(
            "dev_pki", lambda: devpki.DevelopmentPKI.ensure(self.dev_pki_path)
        )

    def ensure_trust_services(self) -> None:
        """Serve the development TSA, OCSP and CRLs if the configuration uses
        them and no process serves them yet."""
        pki = self.dev_pki
        if pki is not None:
            devpki.ensure_served(pki)

    @property
    def trust_roots(self) -> list[asn1_x509.Certificate]:
        def make() -> list[asn1_x509.Certificate]:
            if self.config.trust_roots:
                return load_certificates(self.config.trust_roots)
            pki = self.dev_pki
            assert pki is not None
            return [asn1_certificate(pki.certificate("root"))]

        return self._part("trust_roots", make)

    @property
    def tsa_urls(self) -> tuple[str, ...]:
        if self.config.tsa_urls:
            return self.config.tsa_urls
        pki = self.dev_pki
        # No TSA in production means B-B only: the signer refuses the rest.
        return (pki.tsa_url,) if pki is not None else ()

    @property
    def keys(self) -> list[SigningKey]:
        return self._part("keys", lambda: build_keys(self.config, self.dev_pki))

    @property
    def signer(self) -> DocumentSigner:
        config = self.config
        seal = None
        if config.seal_image is not None:
            seal = Seal(config.seal_image, config.seal_page, config.seal_box)
        return self._part(
            "signer",
            lambda: DocumentSigner(
                self.keys,
                self.trust_roots,
                self.tsa_urls,
                level=config.level,
                timeout=config.timeout_seconds,
                revocation_cache_seconds=config.revocation_cache_seconds,
                seal=seal,
                max_document_bytes=config.max_document_bytes,
                before_use=self.ensure_trust_services,
            ),
        )

    @property
    def validator(self) -> DocumentValidator:
        config = self.config
        return self._part(
            "validator",
            lambda: DocumentValidator(
                self.trust_roots,
                allow_fetching=config.allow_fetching,
                timeout=config.timeout_seconds,
                max_document_bytes=config.max_document_bytes,
                max_seconds=config.max_validation_seconds,
                max_signatures=config.max_signatures,
                before_fetching=self.ensure_trust_services,
            ),
        )

    def validator_recipe(self, **choices: Any) -> ValidatorRecipe:
        """What a child process (``signing.workers``) needs to validate as this
        service does: its trust roots and limits, with ``choices`` (any field of
        ``ValidatorRecipe``) instead of the configured values."""
        config = self.config
        recipe = ValidatorRecipe(
            roots_der=tuple(root.dump() for root in self.trust_roots),
            max_document_bytes=config.max_document_bytes,
            max_seconds=config.max_validation_seconds,
            max_signatures=config.max_signatures,
            memory_bytes=0,
            allow_fetching=config.allow_fetching,
            timeout=config.timeout_seconds,
        )
        return dataclasses.replace(recipe, **choices)

    # -- what callers use ---------------------------------------------------------

    def sign(
        self,
        pdf: bytes,
        *,
        level: Level | None = None,
        seal: Seal | None = None,
        reason: str | None = None,
        location: str | None = None,
    ) -> bytes:
        """Certify ``pdf``; see ``DocumentSigner.sign``."""
        return self.signer.sign(
            pdf, level=level, seal=seal, reason=reason, location=location
        )

    def validate(
        self,
        pdf: bytes,
        *,
        moment: dt.datetime | None = None,
        allow_fetching: bool | None = None,
    ) -> ValidationReport:
        """Validate ``pdf``; see ``DocumentValidator.validate``."""
        return self.validator.validate(
            pdf, moment=moment, allow_fetching=allow_fetching
        )

    def status(self) -> ServiceStatus:
        """Certificates with their expiry, and whether each TSA answers."""
        problems: list[str] = []
        certificates: list[CertificateStatus] = []
        pki_note = None
        try:
            pki = self.dev_pki
            if pki is not None:
                pki_note = f"{pki.path} (services on {pki.base_url})"
                self.ensure_trust_services()
            # Under the signer's lock: the certificates are shared with signing.
            with self.signer.one_at_a_time:
                current = None
                try:
                    current = self.signer.current_key()
                except SigningError as error:
                    problems.append(str(error))
                for key in self.keys:
                    try:
                        certificates.append(
                            CertificateStatus(
                                f"signer {key.reference}",
                                key.subject,
                                key.not_after,
                                "signs now" if key is current else "",
                            )
                        )
                    except SigningError as error:
                        problems.append(str(error))
                        certificates.append(
                            CertificateStatus(
                                f"signer {key.reference}", "?", None, str(error)
                            )
                        )
            for root in self.trust_roots:
                certificates.append(
                    CertificateStatus(
                        "trust root",
                        str(root.subject.human_friendly),
                        root.not_valid_after,
                    )
                )
            authorities = [self._probe_tsa(url) for url in self.tsa_urls]
        except SigningError as error:
            return ServiceStatus(certificates, [], pki_note, problems + [str(error)])
        for url, error_text, _ in authorities:
            if error_text:
                problems.append(f"TSA {url}: {error_text}")
        for certificate in certificates:
            days = certificate.days_left
            if days is not None and days < 30 and certificate.role != "trust root":
                problems.append(f"{certificate.role} expires in {days} days")
        return ServiceStatus(certificates, authorities, pki_note, problems)

    def _probe_tsa(self, url: str) -> tuple[str, str | None, float | None]:
        """Ask one TSA for a real token over a dummy digest."""
        started = time.perf_counter()
        try:
            with translated(f"probe TSA {url}"):
                asyncio.run(
                    Timestamper((url,), self.config.timeout_seconds).async_timestamp(
                        hashlib.sha256(b"campus-card status probe").digest(), "sha256"
                    )
                )
        except SigningError as error:
            return url, str(error), None
        return url, None, round((time.perf_counter() - started) * 1000, 1)
