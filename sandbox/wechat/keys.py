"""The sandbox merchant's and the sandbox WeChat Pay's keys, made on first run.

Everything lives in ``<instance>/sandbox/wechat/`` so that the service's embedded
default configuration can read the merchant's side of it:

- ``apiclient_key.pem`` / ``apiclient_cert.pem``: the merchant API key and
  certificate; requests are signed with the key and checked against the
  certificate, whose serial number the ``Authorization`` header names;
- ``apiv3_key.txt``: the 32-character APIv3 key (AES-256-GCM for notifications,
  platform certificates and, in the real API, sensitive fields);
- ``platform/<serial>.key`` and ``.pem``: two platform certificates valid at once,
  the older expiring soon, as during a real rotation;
- ``pub_key.pem`` (and its private half ``pub_key_private.pem``, which only the
  gateway reads): the platform public key, named by ``PUB_KEY_ID_…``;
- ``wechat.json``: the ids (mchid, appid, OAuth app secret, serials).

The folder is written complete into a temporary sibling and renamed into place,
so two processes starting at once never see half a key set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import shutil
import string
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

logger = logging.getLogger(__name__)

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"


@dataclasses.dataclass(frozen=True)
class PlatformCertificate:
    serial: str
    """Upper-case hex, as ``Wechatpay-Serial`` carries it."""
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclasses.dataclass(frozen=True)
class WechatKeys:
    folder: Path
    mchid: str
    appid: str
    app_secret: str
    apiv3_key: str
    merchant_serial: str
    merchant_key: rsa.RSAPrivateKey
    merchant_certificate: x509.Certificate
    platform_certificates: tuple[PlatformCertificate, ...]
    """Oldest first."""
    public_key_id: str
    public_key_private: rsa.RSAPrivateKey

    @property
    def merchant_key_pem(self) -> str:
        return _private_pem(self.merchant_key)

    @property
    def public_key_pem(self) -> str:
        return _public_pem(self.public_key_private.public_key())

    def platform(self, serial: str) -> PlatformCertificate | None:
        for platform in self.platform_certificates:
            if platform.serial == serial.upper():
                return platform
        return None

    @classmethod
    def load_or_create(cls, folder: Path) -> WechatKeys:
        folder = Path(folder)
        if not (folder / "wechat.json").exists():
            _create(folder)
        return cls.load(folder)

    @classmethod
    def load(cls, folder: Path) -> WechatKeys:
        ids = json.loads((folder / "wechat.json").read_text())
        platforms = []
        for serial in ids["platform_serials"]:
            certificate = x509.load_pem_x509_certificate(
                (folder / "platform" / f"{serial}.pem").read_bytes()
            )
            platforms.append(
                PlatformCertificate(
                    serial,
                    certificate,
                    _load_key(folder / "platform" / f"{serial}.key"),
                )
            )
        return cls(
            folder=folder,
            mchid=ids["mchid"],
            appid=ids["appid"],
            app_secret=ids["app_secret"],
            apiv3_key=(folder / "apiv3_key.txt").read_text().strip(),
            merchant_serial=ids["merchant_serial"],
            merchant_key=_load_key(folder / "apiclient_key.pem"),
            merchant_certificate=x509.load_pem_x509_certificate(
                (folder / "apiclient_cert.pem").read_bytes()
            ),
            platform_certificates=tuple(platforms),
            public_key_id=ids["public_key_id"],
            public_key_private=_load_key(folder / "pub_key_private.pem"),
        )


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "X")


def _create(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wechat-", dir=folder.parent))
    try:
        _write_key_set(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            # Another process finished first (the folder exists, not empty): its
            # keys win and ours are thrown away.
            if not (folder / "wechat.json").exists():
                raise
            return
        logger.info("sandbox_wechat_keys_created", extra={"folder": str(folder)})
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_key_set(folder: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key = _new_key()
    ca_name = _name("Tenpay.com Root CA (sandbox)")

    merchant_key = _new_key()
    merchant_cert = _issue(
        ca_key,
        ca_name,
        merchant_key,
        _name(MCHID, "校园卡沙箱商户"),
        now - dt.timedelta(days=30),
        now + dt.timedelta(days=5 * 365),
    )
    _write(folder / "apiclient_key.pem", _private_pem(merchant_key))
    _write(
        folder / "apiclient_cert.pem",
        merchant_cert.public_bytes(serialization.Encoding.PEM).decode(),
    )

    # Rotation as WeChat Pay does it: the new certificate is issued while the old
    # one still has days to run, and both are served until the old one expires.
    periods = [
        (now - dt.timedelta(days=5 * 365 - 10), now + dt.timedelta(days=10)),
        (now - dt.timedelta(days=1), now + dt.timedelta(days=5 * 365)),
    ]
    (folder / "platform").mkdir()
    serials = []
    for not_before, not_after in periods:
        key = _new_key()
        cert = _issue(
            ca_key,
            ca_name,
            key,
            _name("Tenpay.com sign", "财付通支付科技有限公司"),
            not_before,
            not_after,
        )
        serial = serial_hex(cert)
        serials.append(serial)
        _write(folder / "platform" / f"{serial}.key", _private_pem(key))
        _write(
            folder / "platform" / f"{serial}.pem",
            cert.public_bytes(serialization.Encoding.PEM).decode(),
        )

    public_key = _new_key()
    _write(folder / "pub_key_private.pem", _private_pem(public_key))
    _write(folder / "pub_key.pem", _public_pem(public_key.public_key()))

    alphabet = string.ascii_letters + string.digits
    _write(
        folder / "apiv3_key.txt", "".join(secrets.choice(alphabet) for _ in range(32))
    )
    ids = {
        "mchid": MCHID,
        "appid": APPID,
        "app_secret": secrets.token_hex(16),
        "merchant_serial": serial_hex(merchant_cert),
        "platform_serials": serials,
        "public_key_id": "PUB_KEY_ID_0119" + MCHID + secrets.token_hex(4).upper(),
    }
    _write(folder / "wechat.json", json.dumps(ids, indent=2))


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common: str, organisation: str = "Tenpay.com") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _issue(
    ca_key: rsa.RSAPrivateKey,
    ca_name: x509.Name,
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        # 160 random bits: WeChat Pay's serials are 40 hex digits.
        .serial_number(secrets.randbits(159) | (1 << 158))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA256())
    )


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _write(path: Path, text: str) -> None:
    # Owner-only: these are private keys, even if only sandbox ones.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
