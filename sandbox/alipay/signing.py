"""RSA2 as the Alipay open platform uses it, written from the published rules
rather than taken from the SDK, so that the gateway checks our client instead of
agreeing with it by construction.

- A request's string to sign: every parameter but ``sign`` (``sign_type``
  included) with a non-empty value, sorted by name, ``name=value`` joined by
  ``&``, values as received after URL decoding.
- An asynchronous notification's: the same, without ``sign`` and ``sign_type``.
- A synchronous answer's: the exact JSON text of the ``<method>_response`` object.

RSA2 is SHA256withRSA (PKCS#1 v1.5), the signature Base64 encoded.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def load_private(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_public(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def request_content(params: Mapping[str, str]) -> str:
    return _content(params, excluded=("sign",))


def notification_content(params: Mapping[str, str]) -> str:
    return _content(params, excluded=("sign", "sign_type"))


def _content(params: Mapping[str, str], excluded: tuple[str, ...]) -> str:
    return "&".join(
        f"{name}={value}"
        for name, value in sorted(params.items())
        if name not in excluded and value != ""
    )


def sign(key: rsa.RSAPrivateKey, content: str) -> str:
    signature = key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
