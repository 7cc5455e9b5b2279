"""Signing settings, read from ``CAMPUS_SIGNING_*`` environment variables.

The embedded default signs with the development PKI that is made on first use in
``<instance>/signing/dev-pki`` and trusts only its root. Production mode refuses that
PKI and names the setting to change. ``docs/signing.md`` shows whole configurations.

Keys are listed in ``CAMPUS_SIGNING_KEYS``, oldest first, to allow rotation: the
newest key whose certificate is valid now signs; all of them are shown by
``flask signing status``. Documents signed by a retired key keep validating as long
as its root stays in ``CAMPUS_SIGNING_TRUST_ROOTS``.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from pathlib import Path

from signing.errors import SigningConfigError

PREFIX = "CAMPUS_SIGNING_"


class Level(enum.Enum):
    """PAdES baseline levels (ETSI EN 319 142-1), each including the one before."""

    B_B = "B-B"
    """The signature alone; its time is only what the signer claims."""

    B_T = "B-T"
    """Plus an RFC 3161 timestamp on the signature: a trusted signing time."""

    B_LT = "B-LT"
    """Plus the certificates, OCSP answers and CRLs needed to validate it, in the
    document security store: validates offline."""

    B_LTA = "B-LTA"
    """Plus a document timestamp over all of that: validates offline after the
    signer's certificate has expired, until the timestamp authority's has."""

    @classmethod
    def parse(cls, value: str) -> Level:
        normalised = value.strip().upper().replace("_", "-")
        if not normalised.startswith("B-"):
            normalised = "B-" + normalised
        for level in cls:
            if level.value == normalised:
                return level
        raise SigningConfigError(
            f"unknown PAdES level {value!r}; choose one of "
            + ", ".join(level.value for level in cls)
        )

    @property
    def rank(self) -> int:
        return list(Level).index(self)


@dataclasses.dataclass(frozen=True)
class KeyReference:
    """One entry of ``CAMPUS_SIGNING_KEYS``: where a signing key lives."""

    kind: str
    """``development``, ``pkcs12`` or ``pkcs11``."""

    location: str
    """The PKCS#12 file's path, the PKCS#11 key label, or the development signer's
    name (``rsa``, ``ecdsa``)."""

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"

    @classmethod
    def parse(cls, entry: str) -> KeyReference:
        kind, _, location = entry.strip().partition(":")
        kind = kind.strip().lower()
        if kind == "development":
            return cls(kind, location.strip() or "rsa")
        if kind in {"pkcs12", "pkcs11"} and location.strip():
            return cls(kind, location.strip())
        raise SigningConfigError(
            f"{PREFIX}KEYS: cannot read {entry!r}; write development[:rsa|ecdsa], "
            "pkcs12:/path/to/file.p12 or pkcs11:<key label>"
        )


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SigningConfigError(f"{PREFIX}{name.upper()}: expected on/off, got {raw!r}")


@dataclasses.dataclass(frozen=True)
class SigningConfig:
    keys: tuple[KeyReference, ...] = (KeyReference("development", "rsa"),)
    """``CAMPUS_SIGNING_KEYS``: comma-separated, oldest first. ``development[:rsa]``
    or ``development:ecdsa`` is a signer of the development PKI;
    ``pkcs12:/etc/campus/signer-2026.p12`` a PKCS#12 file (passphrase below);
    ``pkcs11:signer-2026`` a key with that label on the PKCS#11 token below."""

    pkcs12_passphrase: str = dataclasses.field(default="", repr=False)
    """``CAMPUS_SIGNING_PKCS12_PASSPHRASE``: opens every PKCS#12 file listed."""

    pkcs11_module: str = ""
    """``CAMPUS_SIGNING_PKCS11_MODULE``: path of the token's PKCS#11 library, e.g.
    ``/usr/lib/softhsm/libsofthsm2.so`` or the HSM vendor's."""

    pkcs11_token_label: str = ""
    """``CAMPUS_SIGNING_PKCS11_TOKEN_LABEL``: label of the token holding the keys."""

    pkcs11_pin: str = dataclasses.field(default="", repr=False)
    """``CAMPUS_SIGNING_PKCS11_PIN``: the token's user PIN."""

    certificates: tuple[Path, ...] = ()
    """``CAMPUS_SIGNING_CERTIFICATES``: PEM files with the signer certificates of
    PKCS#11 keys, when the token holds only keys, and intermediate CA certificates
    to embed. A PKCS#11 key's certificate is otherwise read from the token under the
    key's label."""

    trust_roots: tuple[Path, ...] = ()
    """``CAMPUS_SIGNING_TRUST_ROOTS``: PEM or DER files (or folders of them) with
    the root certificates a signature must chain to. Empty means the development
    root; production requires it. Keep retired roots listed while documents signed
    under them must validate."""

    tsa_urls: tuple[str, ...] = ()
    """``CAMPUS_SIGNING_TSA_URLS``: RFC 3161 timestamp authorities, tried in order.
    Empty means the development TSA; production requires one for levels above
    B-B."""

    level: Level = Level.B_LTA
    """``CAMPUS_SIGNING_LEVEL``: the default PAdES level, ``B-B`` to ``B-LTA``."""

    timeout_seconds: float = 10.0
    """``CAMPUS_SIGNING_TIMEOUT_SECONDS``: limit of each call to a TSA, OCSP
    responder or CRL server."""

    revocation_cache_seconds: int = 300
    """``CAMPUS_SIGNING_REVOCATION_CACHE_SECONDS``: how long OCSP answers and CRLs
    fetched while signing are reused for later documents. Keep it below the
    responder's validity period."""

    allow_fetching: bool = True
    """``CAMPUS_SIGNING_ALLOW_FETCHING``: validation may fetch revocation data it
    does not find in the document (B-B and B-T files need it). Off means
    validation uses only what is embedded."""

    max_document_bytes: int = 32 * 1024 * 1024
    """``CAMPUS_SIGNING_MAX_DOCUMENT_BYTES``: larger files are refused unread."""

    max_validation_seconds: float = 20.0
    """``CAMPUS_SIGNING_MAX_VALIDATION_SECONDS``: validation stops between
    signatures once this is spent and reports the file as not validated."""

    max_signatures: int = 16
    """``CAMPUS_SIGNING_MAX_SIGNATURES``: files with more signatures and document
    timestamps than this are not validated."""

    seal_image: Path | None = None
    """``CAMPUS_SIGNING_SEAL_IMAGE``: PNG or JPEG of the visible seal; empty means
    an invisible signature unless the caller passes a seal."""

    seal_page: int = 0
    """``CAMPUS_SIGNING_SEAL_PAGE``: page of the seal, 0 the first, -1 the last."""

    seal_box: tuple[int, int, int, int] = (420, 40, 540, 160)
    """``CAMPUS_SIGNING_SEAL_BOX``: ``x1,y1,x2,y2`` in points from the bottom left."""

    dev_pki_path: Path | None = None
    """``CAMPUS_SIGNING_DEV_PKI_PATH``: where the development PKI lives. Empty means
    ``<instance>/signing/dev-pki``."""

    @property
    def uses_development_pki(self) -> bool:
        return (
            any(key.kind == "development" for key in self.keys)
            or not self.trust_roots
            or not self.tsa_urls
        )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> SigningConfig:
        """Read ``CAMPUS_SIGNING_*`` from ``environ`` (default ``os.environ``),
        then apply ``overrides`` given in code, as tests do."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(PREFIX + field.name.upper())
            if raw is None:
                continue
            values[field.name] = cls._parse(field.name, raw)
        values.update(overrides)
        config = cls(**values)  # type: ignore[arg-type]
        config.check()
        return config

    @staticmethod
    def _parse(name: str, raw: str) -> object:
        try:
            if name == "keys":
                return tuple(KeyReference.parse(entry) for entry in _list(raw))
            if name in {"certificates", "trust_roots"}:
                return tuple(Path(item) for item in _list(raw))
            if name == "tsa_urls":
                return _list(raw)
            if name == "level":
                return Level.parse(raw)
            if name == "allow_fetching":
                return _flag(name, raw)
            if name in {"timeout_seconds", "max_validation_seconds"}:
                return float(raw)
            if name in {
                "revocation_cache_seconds",
                "max_document_bytes",
                "max_signatures",
                "seal_page",
            }:
                return int(raw)
            if name == "seal_box":
                x1, y1, x2, y2 = (int(part) for part in raw.split(","))
                return (x1, y1, x2, y2)
            if name in {"seal_image", "dev_pki_path"}:
                return Path(raw) if raw.strip() else None
        except ValueError as error:
            raise SigningConfigError(
                f"{PREFIX}{name.upper()}: cannot read {raw!r}: {error}"
            ) from error
        return raw

    def check(self) -> None:
        """Refuse values that cannot work."""
        if not self.keys:
            raise SigningConfigError(f"{PREFIX}KEYS lists no key")
        if self.timeout_seconds <= 0:
            raise SigningConfigError(f"{PREFIX}TIMEOUT_SECONDS must be positive")
        if any(key.kind == "pkcs11" for key in self.keys) and not (
            self.pkcs11_module and self.pkcs11_token_label
        ):
            raise SigningConfigError(
                f"{PREFIX}KEYS names a PKCS#11 key: set {PREFIX}PKCS11_MODULE and "
                f"{PREFIX}PKCS11_TOKEN_LABEL (and {PREFIX}PKCS11_PIN)"
            )

    def check_production(self) -> None:
        """Refuse the development PKI, naming each setting still on it."""
        refusals = []
        if any(key.kind == "development" for key in self.keys):
            refusals.append(f"{PREFIX}KEYS still names the development PKI")
        if not self.trust_roots:
            refusals.append(
                f"{PREFIX}TRUST_ROOTS is empty (the development root would be trusted)"
            )
        if not self.tsa_urls and self.level is not Level.B_B:
            refusals.append(
                f"{PREFIX}TSA_URLS is empty (the development TSA would be used)"
            )
        if refusals:
            raise SigningConfigError(
                "production mode refuses the development PKI: " + "; ".join(refusals)
            )
