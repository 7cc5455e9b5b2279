"""The development PKI: made on first use in the instance folder, served on loopback.

What it holds, all under one folder (``<instance>/signing/dev-pki`` by default)::

    Campus Card Development Root CA          30 years, trust anchor
    ├── Campus Card Development Document CA  15 years, issues the signers
    │   ├── signer "rsa"      RSA 3072, 2 years   digitalSignature, nonRepudiation,
    │   ├── signer "ecdsa"    ECDSA P-256         id-kp-documentSigning; OCSP + CRL
    │   ├── signer "revoked"  RSA 2048, revoked one hour after it was issued
    │   └── OCSP responder    delegated, id-kp-OCSPSigning, ocsp-nocheck
    └── Timestamp authority   12 years, id-kp-timeStamping (critical)

The TSA (RFC 3161), the OCSP responder (RFC 6960) and both CRLs (RFC 5280) are
answered by ``TrustServices``, a WSGI app built on certomancer's responders and our
keys, served at ``http://127.0.0.1:<port>``. Those URLs are written into the
certificates, so the port is chosen once, when the PKI is made, and kept in
``manifest.json``; every process that needs the services serves them there in a
background thread (``ensure_served``), or finds another of our processes already
serving the same PKI there and uses that. Parallel test workers each make their own
PKI in their own instance folder and so get their own port.

Signer certificates live two years and the TSA's twelve, so that a B-LTA document
can be shown to validate after its signer has expired.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509
from certomancer.services import RevocationInfoInterface
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
)

from signing.errors import SigningConfigError, TrustServiceUnavailable
from signing.keys import asn1_certificate

logger = logging.getLogger(__name__)

FORMAT = 1
SIGNERS = ("rsa", "ecdsa", "revoked")
ORGANISATION = "Campus Card development PKI"
# RFC 9336: says what the key is for. Signer certificates also carry
# emailProtection, because NSS (and so poppler, Evince and Okular) validates a
# PDF signer as an e-mail signer and refuses certificates without it.
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
# Answers are valid this long: a signing process may reuse them meanwhile.
OCSP_VALIDITY = dt.timedelta(hours=1)
CRL_VALIDITY = dt.timedelta(days=1)
# OCSP answers and CRLs say they were made this much earlier than they were, as
# real responders do, so that a validator whose clock was read a moment before
# the answer arrived does not find it "too recent".
BACKDATE = dt.timedelta(minutes=1)
MAX_REQUEST_BYTES = 64 * 1024

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class DevelopmentPKI:
    """A development PKI on disk: certificates, keys, port and revocations.

    Make one with ``ensure`` (idempotent and safe across processes); it never
    changes after that, so any number of processes can read it.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._certificates: dict[str, x509.Certificate] = {}

    # -- making and loading ---------------------------------------------------

    @classmethod
    def ensure(cls, path: Path) -> DevelopmentPKI:
        """Load the PKI at ``path``, making it first if it is not there."""
        if (path / "manifest.json").exists():
            return cls.load(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent / f".{path.name}.lock"):
            if not (path / "manifest.json").exists():
                _build(path)
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> DevelopmentPKI:
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError as error:
            raise SigningConfigError(
                f"no development PKI at {path}: run `flask signing init-dev-pki`"
            ) from error
        if manifest.get("format") != FORMAT:
            raise SigningConfigError(
                f"the development PKI at {path} has an unknown format; delete the "
                "folder and run `flask signing init-dev-pki` again"
            )
        return cls(path, manifest)

    # -- what it holds --------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.manifest["port"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tsa_url(self) -> str:
        return self.base_url + "/tsa"

    @property
    def passphrase(self) -> str:
        """Opens the signers' PKCS#12 files; a development secret only."""
        return str(self.manifest["pkcs12_passphrase"])

    @property
    def revoked(self) -> dict[int, dt.datetime]:
        return {
            int(serial): dt.datetime.fromisoformat(moment)
            for serial, moment in self.manifest["revoked"].items()
        }

    def certificate_path(self, name: str) -> Path:
        return self.path / f"{name}.crt.pem"

    def key_path(self, name: str) -> Path:
        return self.path / f"{name}.key.pem"

    def pkcs12_path(self, signer: str) -> Path:
        if signer not in SIGNERS:
            raise SigningConfigError(
                f"the development PKI has no signer {signer!r}; it has "
                + ", ".join(SIGNERS)
            )
        return self.path / f"signer-{signer}.p12"

    def certificate(self, name: str) -> x509.Certificate:
        if name not in self._certificates:
            self._certificates[name] = x509.load_pem_x509_certificate(
                self.certificate_path(name).read_bytes()
            )
        return self._certificates[name]

    def private_key(self, name: str) -> PrivateKey:
        key = serialization.load_pem_private_key(
            self.key_path(name).read_bytes(), password=None
        )
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        return key

    def certificates(self) -> Iterator[tuple[str, x509.Certificate]]:
        for name in ("root", "ca", "tsa", "ocsp", *(f"signer-{s}" for s in SIGNERS)):
            yield name, self.certificate(name)


# -- making ------------------------------------------------------------------


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` across processes."""
    with open(lock_path, "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def free_port() -> int:
    """A port nobody listens on now. Another program may take it later; serving
    then fails with a message saying so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(**granted: bool) -> x509.KeyUsage:
    usages = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    usages.update(granted)
    return x509.KeyUsage(**usages)


class _Issuer:
    """Signs certificates as one CA, with its URLs in what it issues."""

    def __init__(
        self, certificate: x509.Certificate | None, key: PrivateKey, name: x509.Name
    ) -> None:
        self.certificate = certificate
        self.key = key
        self.name = name

    def issue(
        self,
        common_name: str,
        public_key: Any,
        not_before: dt.datetime,
        lifetime: dt.timedelta,
        extensions: Iterable[tuple[x509.ExtensionType, bool]],
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + lifetime)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()
                ),
                critical=False,
            )
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(self.key, hashes.SHA256())


def _write_key(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _build(path: Path) -> None:
    """Make the whole PKI in a temporary folder, then move it into place, so a
    reader never sees half of one."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # An hour back, so that a machine whose clock runs a little behind accepts it.
    not_before = now - dt.timedelta(hours=1)
    year = dt.timedelta(days=365)
    passphrase = secrets.token_urlsafe(16)
    staging = Path(tempfile.mkdtemp(prefix=".dev-pki-", dir=path.parent))

    root_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    root_name = _name("Campus Card Development Root CA")
    root = _Issuer(None, root_key, root_name).issue(
        "Campus Card Development Root CA",
        root_key.public_key(),
        not_before,
        30 * year,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (_key_usage(key_cert_sign=True, crl_sign=True), True),
        ],
    )
    root_issuer = _Issuer(root, root_key, root.subject)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca = root_issuer.issue(
        "Campus Card Development Document CA",
        ca_key.public_key(),
        not_before,
        15 * year,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_key_usage(key_cert_sign=True, crl_sign=True), True),
            (_crl_distribution(f"{base}/crl/root.crl"), False),
        ],
    )
    ca_issuer = _Issuer(ca, ca_key, ca.subject)

    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tsa = root_issuer.issue(
        "Campus Card Development Timestamp Authority",
        tsa_key.public_key(),
        not_before,
        12 * year,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
            (_crl_distribution(f"{base}/crl/root.crl"), False),
        ],
    )

    ocsp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ocsp = ca_issuer.issue(
        "Campus Card Development OCSP Responder",
        ocsp_key.public_key(),
        not_before,
        2 * year,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
            (x509.OCSPNoCheck(), False),
        ],
    )

    keys: dict[str, PrivateKey] = {
        "root": root_key,
        "ca": ca_key,
        "tsa": tsa_key,
        "ocsp": ocsp_key,
    }
    certificates = {"root": root, "ca": ca, "tsa": tsa, "ocsp": ocsp}
    signer_keys: dict[str, PrivateKey] = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=3072),
        "ecdsa": ec.generate_private_key(ec.SECP256R1()),
        "revoked": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    revoked: dict[str, str] = {}
    for signer, key in signer_keys.items():
        certificate = ca_issuer.issue(
            f"Campus Card Development Document Signer ({signer})",
            key.public_key(),
            not_before,
            2 * year,
            [
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (_key_usage(digital_signature=True, content_commitment=True), True),
                (
                    x509.ExtendedKeyUsage(
                        [DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]
                    ),
                    False,
                ),
                (_crl_distribution(f"{base}/crl/ca.crl"), False),
                (
                    x509.AuthorityInformationAccess(
                        [
                            x509.AccessDescription(
                                AuthorityInformationAccessOID.OCSP,
                                x509.UniformResourceIdentifier(f"{base}/ocsp"),
                            ),
                            x509.AccessDescription(
                                AuthorityInformationAccessOID.CA_ISSUERS,
                                x509.UniformResourceIdentifier(f"{base}/certs/ca.cer"),
                            ),
                        ]
                    ),
                    False,
                ),
            ],
        )
        keys[f"signer-{signer}"] = key
        certificates[f"signer-{signer}"] = certificate
        if signer == "revoked":
            # Revoked before anything can sign with it, also by a clock that
            # runs a little behind.
            revoked_at = not_before + dt.timedelta(minutes=30)
            revoked[str(certificate.serial_number)] = revoked_at.isoformat()
        (staging / f"signer-{signer}.p12").write_bytes(
            pkcs12.serialize_key_and_certificates(
                name=f"signer-{signer}".encode(),
                key=key,
                cert=certificate,
                cas=[ca],
                encryption_algorithm=serialization.BestAvailableEncryption(
                    passphrase.encode()
                ),
            )
        )

    for name, key in keys.items():
        _write_key(staging / f"{name}.key.pem", key)
    for name, certificate in certificates.items():
        _write_certificate(staging / f"{name}.crt.pem", certificate)
    manifest = {
        "format": FORMAT,
        "port": port,
        "created_at": now.isoformat(),
        "pkcs12_passphrase": passphrase,
        "revoked": revoked,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if path.exists():
        # A folder without a manifest is the remains of an interrupted run.
        shutil.rmtree(path)
    staging.rename(path)
    logger.info("dev_pki_created", extra={"path": str(path), "port": port})


def _crl_distribution(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


# -- serving ------------------------------------------------------------------


def _asn1_key(key: PrivateKey) -> asn1_keys.PrivateKeyInfo:
    return asn1_keys.PrivateKeyInfo.load(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class _Revocations(RevocationInfoInterface):
    """certomancer's revocation interface, answered from our manifest."""

    def __init__(self, pki: DevelopmentPKI) -> None:
        self.issuer = asn1_certificate(pki.certificate("ca"))
        self.revoked = pki.revoked
        self.issued = {
            pki.certificate(f"signer-{signer}").serial_number for signer in SIGNERS
        } | {pki.certificate("ocsp").serial_number}

    def get_issuer_cert(self) -> asn1_x509.Certificate:
        return self.issuer

    def check_revocation_status(
        self, cid: asn1_ocsp.CertId, at_time: dt.datetime
    ) -> tuple[asn1_ocsp.CertStatus, list[Any]]:
        serial = cid["serial_number"].native
        revoked_at = self.revoked.get(serial)
        if revoked_at is not None and revoked_at <= at_time:
            info = asn1_ocsp.RevokedInfo(
                {"revocation_time": revoked_at, "revocation_reason": "key_compromise"}
            )
            return asn1_ocsp.CertStatus(name="revoked", value=info), []
        if serial in self.issued:
            return asn1_ocsp.CertStatus(name="good", value=None), []
        return asn1_ocsp.CertStatus(name="unknown", value=None), []


class TrustServices:
    """The development TSA, OCSP responder, CRLs and CA certificates as one WSGI
    app. Routes: ``POST /tsa``, ``POST /ocsp``, ``GET /crl/{root,ca}.crl``,
    ``GET /certs/{root,ca}.cer``."""

    def __init__(self, pki: DevelopmentPKI) -> None:
        from certomancer.services import CRLBuilder, TimeStamper, choose_signed_digest

        self._choose_signed_digest = choose_signed_digest
        self.pki = pki
        self.timestamper = TimeStamper(
            tsa_cert=asn1_certificate(pki.certificate("tsa")),
            tsa_key=_asn1_key(pki.private_key("tsa")),
        )
        self.ocsp_certificate = asn1_certificate(pki.certificate("ocsp"))
        self.ocsp_key = _asn1_key(pki.private_key("ocsp"))
        self.revocations = _Revocations(pki)
        self.crl_builders = {}
        for name in ("root", "ca"):
            certificate = asn1_certificate(pki.certificate(name))
            self.crl_builders[name] = CRLBuilder(
                issuer_name=certificate.subject,
                issuer_key=_asn1_key(pki.private_key(name)),
                signature_algo=choose_signed_digest("sha256", certificate.public_key),
                authority_key_identifier=certificate.key_identifier_value,
            )
        self.ca_certificates = {
            name: asn1_certificate(pki.certificate(name)).dump()
            for name in ("root", "ca")
        }
        # Requests answered per path: shows what a signer fetched and what it
        # took from its cache.
        self.requests: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()

    def timestamp(self, body: bytes) -> bytes:
        request = asn1_tsp.TimeStampReq.load(body)
        return bytes(self.timestamper.request_tsa_response(request).dump())

    def ocsp(self, body: bytes) -> bytes:
        from certomancer.services import SimpleOCSPResponder

        responder = SimpleOCSPResponder(
            responder_cert=self.ocsp_certificate,
            responder_key=self.ocsp_key,
            signature_algo=self._choose_signed_digest(
                "sha256", self.ocsp_certificate.public_key
            ),
            at_time=dt.datetime.now(dt.UTC) - BACKDATE,
            revinfo_interface=self.revocations,
            validity=OCSP_VALIDITY,
        )
        request = asn1_ocsp.OCSPRequest.load(body)
        return bytes(responder.build_ocsp_response(request).dump())

    def crl(self, name: str) -> bytes:
        from certomancer.services import CRLBuilder

        now = dt.datetime.now(dt.UTC).replace(microsecond=0) - BACKDATE
        revoked = []
        if name == "ca":
            revoked = [
                CRLBuilder.format_revoked_cert(
                    serial, asn1_crl.CRLReason("key_compromise"), moment
                )
                for serial, moment in self.revocations.revoked.items()
                if moment <= now
            ]
        crl = self.crl_builders[name].build_crl(
            crl_number=int(now.timestamp()),
            this_update=now,
            next_update=now + CRL_VALIDITY,
            revoked_certs=revoked,
        )
        return bytes(crl.dump())

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        request.max_content_length = MAX_REQUEST_BYTES
        routes: dict[tuple[str, str], tuple[Callable[[], bytes], str]] = {
            ("POST", "/tsa"): (
                lambda: self.timestamp(request.get_data()),
                "application/timestamp-reply",
            ),
            ("POST", "/ocsp"): (
                lambda: self.ocsp(request.get_data()),
                "application/ocsp-response",
            ),
        }
        for name in ("root", "ca"):
            routes[("GET", f"/crl/{name}.crl")] = (
                lambda name=name: self.crl(name),  # type: ignore[misc]
                "application/pkix-crl",
            )
            routes[("GET", f"/certs/{name}.cer")] = (
                lambda name=name: self.ca_certificates[name],  # type: ignore[misc]
                "application/pkix-cert",
            )
        path = request.path
        if request.method == "GET" and path.startswith("/ocsp/"):
            # RFC 6960 A.1: small requests may come as GET, base64 in the path;
            # NSS (poppler, Evince, Okular) asks this way first.
            encoded = unquote(path.removeprefix("/ocsp/"))
            path = "/ocsp"
            routes[("GET", path)] = (
                lambda: self.ocsp(base64.b64decode(encoded)),
                "application/ocsp-response",
            )
        route = routes.get((request.method, path))
        with self._count_lock:
            self.requests[path] += 1
        if route is None:
            response = Response("not found\n", status=404)
        else:
            answer, mimetype = route
            try:
                response = Response(answer(), mimetype=mimetype)
            except ValueError as error:
                # asn1crypto (and base64) raise ValueError on malformed input.
                logger.info(
                    "dev_trust_service_bad_request",
                    extra={"path": request.path, "error": str(error)},
                )
                response = Response("malformed request\n", status=400)
        return response(environ, start_response)


def _quiet_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        """Keeps werkzeug's line per request out of our logs."""

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    return QuietHandler


_served: dict[Path, Any] = {}
_served_lock = threading.Lock()


def ensure_served(pki: DevelopmentPKI) -> None:
    """Make sure the PKI's trust services answer at its port: serve them from
    this process in a background thread, unless another of our processes already
    does. Safe to call before every signature; only the first call does work."""
    from werkzeug.serving import make_server

    key = pki.path.resolve()
    with _served_lock:
        if key in _served:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            # Bound here rather than by werkzeug, which exits the process when
            # the port is taken.
            listener.bind(("127.0.0.1", pki.port))
            listener.listen(64)
        except OSError as error:
            listener.close()
            if error.errno != errno.EADDRINUSE:
                raise
            if _serves_this_pki(pki):
                logger.info("dev_trust_services_found", extra={"port": pki.port})
                return
            raise TrustServiceUnavailable(
                f"port {pki.port} of the development PKI at {pki.path} is taken by "
                "another program; stop it, or delete that folder and run "
                "`flask signing init-dev-pki` to make a PKI on a new port",
                url=pki.base_url,
            ) from error
        server = make_server(
            "127.0.0.1",
            pki.port,
            TrustServices(pki),
            threaded=True,
            request_handler=_quiet_handler(),
            fd=listener.fileno(),
        )
        # The server works on its own duplicate of the descriptor.
        listener.close()
        thread = threading.Thread(
            target=server.serve_forever,
            name=f"dev-trust-services-{pki.port}",
            daemon=True,
        )
        thread.start()
        _served[key] = server
        logger.info("dev_trust_services_started", extra={"port": pki.port})


def stop_serving(pki: DevelopmentPKI) -> None:
    """Stop the services this process serves for ``pki``, if any."""
    with _served_lock:
        server = _served.pop(pki.path.resolve(), None)
    if server is not None:
        server.shutdown()
        server.server_close()


def _serves_this_pki(pki: DevelopmentPKI) -> bool:
    """Whether whoever listens on the PKI's port hands out this PKI's root."""
    import requests

    try:
        answer = requests.get(f"{pki.base_url}/certs/root.cer", timeout=2)
    except requests.RequestException:
        return False
    expected = pki.certificate("root").public_bytes(serialization.Encoding.DER)
    return answer.status_code == 200 and answer.content == expected
