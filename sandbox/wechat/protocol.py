"""WeChat Pay API v3's wire rules, as the gateway side applies them.

Requests carry ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",
signature="…",timestamp="…",serial_no="…"``, an RSA-SHA256 (PKCS#1 v1.5) signature
over ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n``. Responses and
notifications carry ``Wechatpay-Timestamp/-Nonce/-Signature/-Serial/
-Signature-Type``, a signature over ``TIMESTAMP\\nNONCE\\nBODY\\n`` by the platform
key. Notification resources and served platform certificates are sealed with
AEAD_AES_256_GCM under the merchant's APIv3 key: a 12-character nonce, the
associated data as given, and base64 of ciphertext followed by the 16-byte tag.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
import string

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEME = "WECHATPAY2-SHA256-RSA2048"
MAX_SKEW_SECONDS = 300
"""A request whose timestamp is further than this from the server's time is
refused, as the real API does."""

_PARAM = re.compile(r'(\w+)="([^"]*)"')
_ALPHABET = string.ascii_letters + string.digits


class AuthorizationError(Exception):
    """The request's ``Authorization`` is missing, malformed or wrong; the message
    is what the real API says in ``message``."""


@dataclasses.dataclass(frozen=True)
class Authorization:
    mchid: str
    nonce_str: str
    signature: str
    timestamp: str
    serial_no: str


def parse_authorization(header: str | None) -> Authorization:
    if not header:
        raise AuthorizationError(
            "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》"
        )
    scheme, _, rest = header.strip().partition(" ")
    if scheme != SCHEME:
        raise AuthorizationError("错误的签名类型，目前仅支持WECHATPAY2-SHA256-RSA2048")
    params = dict(_PARAM.findall(rest))
    try:
        return Authorization(
            mchid=params["mchid"],
            nonce_str=params["nonce_str"],
            signature=params["signature"],
            timestamp=params["timestamp"],
            serial_no=params["serial_no"],
        )
    except KeyError as missing:
        raise AuthorizationError(
            f"Http头Authorization值格式错误，缺少{missing.args[0]}"
        ) from None


def request_message(
    method: str, path: str, timestamp: str, nonce: str, body: str
) -> str:
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n"


def response_message(timestamp: str, nonce: str, body: str) -> str:
    return f"{timestamp}\n{nonce}\n{body}\n"


def rsa_sign(key: rsa.RSAPrivateKey, message: str) -> str:
    signature = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def nonce(length: int = 32) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def seal(apiv3_key: str, plaintext: str, associated_data: str) -> dict[str, str]:
    """AEAD_AES_256_GCM as the notification ``resource`` carries it."""
    iv = nonce(12)
    sealed = AESGCM(apiv3_key.encode()).encrypt(
        iv.encode(), plaintext.encode(), associated_data.encode()
    )
    return {
        "algorithm": "AEAD_AES_256_GCM",
        "nonce": iv,
        "associated_data": associated_data,
        "ciphertext": base64.b64encode(sealed).decode(),
    }


def signed_headers(
    key: rsa.RSAPrivateKey, serial: str, body: str, timestamp: int
) -> dict[str, str]:
    once = nonce()
    return {
        "Wechatpay-Timestamp": str(timestamp),
        "Wechatpay-Nonce": once,
        "Wechatpay-Signature": rsa_sign(
            key, response_message(str(timestamp), once, body)
        ),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": SCHEME,
    }
