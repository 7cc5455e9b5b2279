"""The sandbox Alipay's identities and key pairs, generated on first run.

Two RSA-2048 key pairs live in ``<instance>/sandbox/alipay/``: the app's (ours: the
service signs requests with its private key, the gateway verifies them with the
public one) and Alipay's own (the gateway signs answers and notifications, the
service verifies them). The service's sandbox configuration reads the same files,
so that a fresh checkout pays through the sandbox with nothing to set up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger(__name__)

# Alipay's own sandbox apps have ids starting 9021; a PID (seller id) is 2088 and
# twelve more digits.
SANDBOX_APP_ID = "9021000158600001"
SANDBOX_SELLER_ID = "2088721000000001"
SANDBOX_SELLER_EMAIL = "campus-canteen@sandbox.example"

APP_PRIVATE_KEY = "app_private_key.pem"
APP_PUBLIC_KEY = "app_public_key.pem"
ALIPAY_PRIVATE_KEY = "alipay_private_key.pem"
ALIPAY_PUBLIC_KEY = "alipay_public_key.pem"


@dataclasses.dataclass(frozen=True)
class SandboxKeys:
    """PEM text of both key pairs, and the ids they belong to."""

    folder: Path
    app_id: str
    seller_id: str
    app_private_key: str
    app_public_key: str
    alipay_private_key: str
    alipay_public_key: str


def key_folder(instance_path: Path | str) -> Path:
    return Path(instance_path) / "sandbox" / "alipay"


def ensure_keys(instance_path: Path | str) -> SandboxKeys:
    """Read the key pairs, generating whichever is missing."""
    folder = key_folder(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    _ensure_pair(folder / APP_PRIVATE_KEY, folder / APP_PUBLIC_KEY)
    _ensure_pair(folder / ALIPAY_PRIVATE_KEY, folder / ALIPAY_PUBLIC_KEY)
    return SandboxKeys(
        folder=folder,
        app_id=SANDBOX_APP_ID,
        seller_id=SANDBOX_SELLER_ID,
        app_private_key=(folder / APP_PRIVATE_KEY).read_text(),
        app_public_key=(folder / APP_PUBLIC_KEY).read_text(),
        alipay_private_key=(folder / ALIPAY_PRIVATE_KEY).read_text(),
        alipay_public_key=(folder / ALIPAY_PUBLIC_KEY).read_text(),
    )


def existing_public_keys(instance_path: Path | str) -> list[str]:
    """The sandbox's public keys if they were ever generated here, so that
    production can refuse to run with them."""
    folder = key_folder(instance_path)
    return [
        (folder / name).read_text()
        for name in (APP_PUBLIC_KEY, ALIPAY_PUBLIC_KEY)
        if (folder / name).exists()
    ]


def _ensure_pair(private_path: Path, public_path: Path) -> None:
    if private_path.exists() and public_path.exists():
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    # Owner-only, written to a temporary name and renamed, so that two processes
    # starting at once never read half a key.
    temporary = private_path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(private_pem)
    public_temporary = public_path.with_suffix(f".{os.getpid()}.tmp")
    public_temporary.write_bytes(public_pem)
    os.replace(temporary, private_path)
    os.replace(public_temporary, public_path)
    logger.info("sandbox_alipay_key_generated", extra={"key": private_path.name})
