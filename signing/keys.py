"""Signing keys behind one interface: a PKCS#12 file or a key on a PKCS#11 token.

``SigningKey.signer`` gives the pyHanko ``Signer`` for a key, made once per process
and kept: loading a PKCS#12 file runs its key derivation (about 150 ms for the
development files), and pyHanko's stock ``SimpleSigner`` re-parses the private key
for every signature it makes (about 30 ms for RSA 3072, twice per document), which
``ParsedKeySigner`` does once. A PKCS#11 session is opened once and used under a
lock, since a session must not be used by two threads at a time.

The development PKI's signers are PKCS#12 files too, so the embedded default runs
the same code as a production file key.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pyhanko.sign.signers import Signer, SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash, process_pss_params

from signing.config import KeyReference, SigningConfig
from signing.errors import KeyUnavailable, translated

logger = logging.getLogger(__name__)


def asn1_certificate(certificate: Any) -> asn1_x509.Certificate:
    """An asn1crypto certificate from a ``cryptography`` one."""
    return asn1_x509.Certificate.load(
        certificate.public_bytes(serialization.Encoding.DER)
    )


def load_certificates(paths: tuple[Path, ...]) -> list[asn1_x509.Certificate]:
    """Every certificate in the PEM or DER files given, folders read whole."""
    from pyhanko.keys import load_certs_from_pemder

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file()))
        else:
            files.append(path)
    try:
        found = load_certs_from_pemder([str(file) for file in files])  # type: ignore[no-untyped-call]  # untyped in pyHanko
        return list(found)
    except (OSError, ValueError) as error:
        raise KeyUnavailable(
            f"cannot read certificates from {files}: {error}"
        ) from error


class ParsedKeySigner(SimpleSigner):
    """pyHanko's ``SimpleSigner`` with the private key parsed once, not on every
    signature."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._private_key = private_key

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
        algorithm = mechanism.signature_algo
        key = self._private_key
        if algorithm == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPrivateKey):
            return key.sign(
                data, padding.PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm)
            )
        if algorithm == "rsassa_pss" and isinstance(key, rsa.RSAPrivateKey):
            pss, hash_algorithm = process_pss_params(mechanism["parameters"])
            return key.sign(data, pss, hash_algorithm)
        if algorithm == "ecdsa" and isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(
                data, ec.ECDSA(get_pyca_cryptography_hash(digest_algorithm))
            )
        # Anything else (EdDSA, ML-DSA) goes the slow, general way.
        return super().sign_raw(data, digest_algorithm)


class SigningKey(abc.ABC):
    """One configured key: its certificate, and a pyHanko signer made once."""

    def __init__(self, reference: KeyReference) -> None:
        self.reference = reference
        self._signer: Signer | None = None
        # Re-entrant: the log line below reads the certificate through this property.
        self._load_lock = threading.RLock()

    @property
    def signer(self) -> Signer:
        with self._load_lock:
            if self._signer is None:
                with translated(f"load key {self.reference}"):
                    self._signer = self._load()
                logger.info(
                    "signing_key_loaded",
                    extra={
                        "key": str(self.reference),
                        "subject": self.subject,
                        "not_after": self.not_after.isoformat(),
                    },
                )
            return self._signer

    @property
    def certificate(self) -> asn1_x509.Certificate:
        certificate = self.signer.signing_cert
        if certificate is None:
            raise KeyUnavailable(f"{self.reference}: no signer certificate")
        return certificate

    @property
    def subject(self) -> str:
        return str(self.certificate.subject.human_friendly)

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before  # type: ignore[no-any-return]

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after  # type: ignore[no-any-return]

    def valid_at(self, moment: dt.datetime) -> bool:
        return self.not_before <= moment < self.not_after

    def using(self) -> AbstractContextManager[object]:
        """Hold this while the signer signs. File keys need nothing."""
        return nullcontext()

    @abc.abstractmethod
    def _load(self) -> Signer:
        """Parse the key and certificate; called once."""


class FileKey(SigningKey):
    """A key and its certificate chain in a PKCS#12 file."""

    def __init__(
        self,
        reference: KeyReference,
        path: Path,
        passphrase: str,
        extra_certificates: list[asn1_x509.Certificate],
    ) -> None:
        super().__init__(reference)
        self.path = path
        self._passphrase = passphrase
        self._extra_certificates = extra_certificates

    def _load(self) -> Signer:
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise KeyUnavailable(f"cannot read {self.path}: {error}") from error
        try:
            key, certificate, chain = pkcs12.load_key_and_certificates(
                data, self._passphrase.encode() or None
            )
        except ValueError as error:
            raise KeyUnavailable(
                f"cannot open {self.path}: wrong passphrase "
                "(CAMPUS_SIGNING_PKCS12_PASSPHRASE) or not a PKCS#12 file"
            ) from error
        if certificate is None or not isinstance(
            key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        ):
            raise KeyUnavailable(
                f"{self.path} must hold one RSA or ECDSA key with its certificate"
            )
        store = SimpleCertificateStore()  # type: ignore[no-untyped-call]  # untyped upstream
        store.register_multiple([asn1_certificate(c) for c in chain])
        store.register_multiple(self._extra_certificates)
        return ParsedKeySigner(
            key,
            signing_cert=asn1_certificate(certificate),
            signing_key=asn1_keys.PrivateKeyInfo.load(
                key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            ),
            cert_registry=store,
        )


# One logged-in session per token and process: PKCS#11 login state belongs to the
# application, so a second login to the same token fails (UserAlreadyLoggedIn).
# Keys on the same token share the session and its lock.
_token_sessions: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
_token_sessions_lock = threading.Lock()


def _token_session(config: SigningConfig) -> tuple[Any, threading.Lock]:
    from pyhanko.config.pkcs11 import TokenCriteria
    from pyhanko.sign.pkcs11 import open_pkcs11_session

    key = (config.pkcs11_module, config.pkcs11_token_label)
    with _token_sessions_lock:
        if key not in _token_sessions:
            if not Path(config.pkcs11_module).exists():
                raise KeyUnavailable(
                    "CAMPUS_SIGNING_PKCS11_MODULE: no library at "
                    f"{config.pkcs11_module}"
                )
            try:
                session = open_pkcs11_session(
                    config.pkcs11_module,
                    token_criteria=TokenCriteria(label=config.pkcs11_token_label),
                    user_pin=config.pkcs11_pin or None,
                )
            except Exception as error:
                # pyHanko raises its own PKCS11Error for a missing token and
                # python-pkcs11 its errors for a wrong PIN; to us both mean the
                # same: the token cannot be used.
                raise KeyUnavailable(
                    f"cannot open PKCS#11 token {config.pkcs11_token_label!r} "
                    "(CAMPUS_SIGNING_PKCS11_TOKEN_LABEL, CAMPUS_SIGNING_PKCS11_PIN): "
                    f"{type(error).__name__} {error}"
                ) from error
            _token_sessions[key] = (session, threading.Lock())
        return _token_sessions[key]


def store_certificate_on_token(
    config: SigningConfig, label: str, certificate: Any, key_id: bytes | None = None
) -> None:
    """Write ``certificate`` (a ``cryptography`` certificate) onto the configured
    token under ``label``, beside the key of that label, where ``TokenKey`` looks
    for it. softhsm2-util imports only keys, and HSM vendors' tools differ; this
    works with any token through PKCS#11 itself."""
    import pkcs11
    from pkcs11 import Attribute
    from pkcs11.util.x509 import decode_x509_certificate

    attributes = decode_x509_certificate(
        certificate.public_bytes(serialization.Encoding.DER)
    )
    attributes[Attribute.TOKEN] = True
    attributes[Attribute.LABEL] = label
    if key_id is not None:
        attributes[Attribute.ID] = key_id
    with translated(f"store certificate {label!r} on the token"):
        token = pkcs11.lib(config.pkcs11_module).get_token(
            token_label=config.pkcs11_token_label
        )
        try:
            session = token.open(rw=True, user_pin=config.pkcs11_pin or None)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            # Login belongs to the process: a key of this token already signed
            # here, and every new session shares that login.
            session = token.open(rw=True)
        with session:
            session.create_object(attributes)


class TokenKey(SigningKey):
    """A key on a PKCS#11 token (an HSM, or SoftHSM2 in tests); its certificate is
    read from the token under the same label."""

    def __init__(
        self,
        reference: KeyReference,
        config: SigningConfig,
        extra_certificates: list[asn1_x509.Certificate],
    ) -> None:
        super().__init__(reference)
        self._config = config
        self._extra_certificates = extra_certificates
        self._use_lock: threading.Lock | None = None

    def _load(self) -> Signer:
        from pyhanko.sign.pkcs11 import PKCS11Signer

        session, self._use_lock = _token_session(self._config)

        def make(raw_ecdsa: bool) -> PKCS11Signer:
            return PKCS11Signer(
                session,
                key_label=self.reference.location,
                cert_label=self.reference.location,
                ca_chain=self._extra_certificates,
                use_raw_mechanism=raw_ecdsa,
            )

        signer = make(raw_ecdsa=False)
        try:
            with self._use_lock:
                certificate = signer.signing_cert
        except Exception as error:
            raise KeyUnavailable(
                f"token {self._config.pkcs11_token_label!r} has no key and "
                f"certificate labelled {self.reference.location!r}: {error}"
            ) from error
        if certificate.public_key.algorithm == "ec":
            # Many tokens (SoftHSM2 among them) offer only raw CKM_ECDSA, not
            # ECDSA-with-SHA256; hashing here and signing raw works on all.
            signer = make(raw_ecdsa=True)
            with self._use_lock:
                signer.signing_cert  # noqa: B018 -- load while holding the lock
        return signer

    def using(self) -> AbstractContextManager[object]:
        self.signer  # noqa: B018 -- the lock is the session's, known once loaded
        assert self._use_lock is not None
        return self._use_lock


def build_keys(config: SigningConfig, dev_pki: Any | None) -> list[SigningKey]:
    """The configured keys, oldest first. Nothing is loaded yet."""
    extra = load_certificates(config.certificates) if config.certificates else []
    keys: list[SigningKey] = []
    for reference in config.keys:
        if reference.kind == "development":
            assert dev_pki is not None
            keys.append(
                FileKey(
                    reference,
                    dev_pki.pkcs12_path(reference.location),
                    dev_pki.passphrase,
                    extra,
                )
            )
        elif reference.kind == "pkcs12":
            keys.append(
                FileKey(
                    reference, Path(reference.location), config.pkcs12_passphrase, extra
                )
            )
        else:
            keys.append(TokenKey(reference, config, extra))
    return keys
