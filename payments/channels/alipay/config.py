"""Alipay channel settings, read from ``CAMPUS_ALIPAY_*`` environment variables.

With the app's ``channels`` setting at ``sandbox`` every field has a default taken
from the sandbox gateway's generated keys in the instance folder, so that a fresh
checkout pays through the sandbox; variables that are set still win. In
production the sandbox's keys and gateway are refused.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from payments.channels.base import ChannelNotConfigured

PREFIX = "CAMPUS_ALIPAY_"
LIVE_GATEWAY = "https://openapi.alipay.com/gateway.do"
LIVE_AUTHORIZE = "https://openauth.alipay.com/oauth2/publicAppAuthorize.htm"


@dataclasses.dataclass(frozen=True)
class AlipayConfig:
    app_id: str
    """The open-platform app's id (``CAMPUS_ALIPAY_APP_ID``)."""

    app_private_key: str = dataclasses.field(repr=False)
    """Our RSA2 private key, PEM or the bare Base64 the open platform's key tool
    prints (``CAMPUS_ALIPAY_APP_PRIVATE_KEY``, or a file named by
    ``CAMPUS_ALIPAY_APP_PRIVATE_KEY_FILE``)."""

    alipay_public_key: str
    """Alipay's public key for this app, PEM or bare Base64: it checks answers
    and notifications (``CAMPUS_ALIPAY_PUBLIC_KEY`` or ``…_PUBLIC_KEY_FILE``)."""

    seller_id: str = ""
    """Our PID, 2088 and twelve digits (``CAMPUS_ALIPAY_SELLER_ID``): the
    notification handler checks ``seller_id`` against it."""

    gateway_url: str = LIVE_GATEWAY
    """Where the SDK sends requests (``CAMPUS_ALIPAY_GATEWAY_URL``)."""

    authorize_url: str = LIVE_AUTHORIZE
    """Alipay's user-authorisation page (``CAMPUS_ALIPAY_AUTHORIZE_URL``)."""

    timeout_seconds: float = 10.0
    """Every call's timeout; past it the outcome is unknown
    (``CAMPUS_ALIPAY_TIMEOUT_SECONDS``)."""

    notification_skew_seconds: int = 300
    """A notification whose ``notify_time`` is further than this from our clock
    is refused as stale (``CAMPUS_ALIPAY_NOTIFICATION_SKEW_SECONDS``). Alipay
    stamps each attempt, retries included, with the time it is sent, so five
    minutes leaves room for clock drift and slow delivery and none for replays."""

    sandbox: bool = False
    """Whether these are the sandbox's generated keys and gateway."""

    @classmethod
    def from_settings(
        cls, settings: Any, environ: Mapping[str, str] | None = None
    ) -> AlipayConfig:
        """The configuration for the app's ``settings`` (``campus.settings``)."""
        environ = os.environ if environ is None else environ
        defaults: dict[str, Any] = {}
        if settings.channels == "sandbox" and not settings.production:
            from sandbox.alipay.keys import ensure_keys

            keys = ensure_keys(settings.instance_path)
            base = settings.base_url.rstrip("/")
            defaults = {
                "app_id": keys.app_id,
                "app_private_key": keys.app_private_key,
                "alipay_public_key": keys.alipay_public_key,
                "seller_id": keys.seller_id,
                "gateway_url": f"{base}/sandbox/alipay/gateway.do",
                "authorize_url": f"{base}/sandbox/alipay/oauth2/publicAppAuthorize.htm",
                "sandbox": True,
            }
        values = {**defaults, **_read_environ(environ)}
        missing = [
            PREFIX + name.upper()
            for name in ("app_id", "app_private_key", "alipay_public_key")
            if not values.get(name)
        ]
        if missing:
            raise ChannelNotConfigured(
                "Alipay is not configured: set " + ", ".join(missing), channel="alipay"
            )
        values["app_private_key"] = as_pem(values["app_private_key"], private=True)
        values["alipay_public_key"] = as_pem(values["alipay_public_key"], private=False)
        config = cls(**values)
        if settings.production:
            config.refuse_sandbox(settings.instance_path)
        return config

    def refuse_sandbox(self, instance_path: Path) -> None:
        """Refuse the sandbox's gateway, or keys equal to the ones it generated."""
        from sandbox.alipay.keys import existing_public_keys

        sandbox_keys = {
            _fingerprint(pem) for pem in existing_public_keys(instance_path)
        }
        ours = {
            _fingerprint(self.alipay_public_key),
            _public_fingerprint(self.app_private_key),
        }
        if self.sandbox or "/sandbox/" in self.gateway_url or ours & sandbox_keys:
            raise ChannelNotConfigured(
                "production refuses the Alipay sandbox's keys or gateway: set "
                f"{PREFIX}APP_PRIVATE_KEY, {PREFIX}PUBLIC_KEY and "
                f"{PREFIX}GATEWAY_URL to the live app's",
                channel="alipay",
            )


_FIELDS = {
    "APP_ID": "app_id",
    "APP_PRIVATE_KEY": "app_private_key",
    "PUBLIC_KEY": "alipay_public_key",
    "SELLER_ID": "seller_id",
    "GATEWAY_URL": "gateway_url",
    "AUTHORIZE_URL": "authorize_url",
    "TIMEOUT_SECONDS": "timeout_seconds",
    "NOTIFICATION_SKEW_SECONDS": "notification_skew_seconds",
}


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for suffix, field in _FIELDS.items():
        raw = environ.get(PREFIX + suffix)
        if raw is None and suffix in ("APP_PRIVATE_KEY", "PUBLIC_KEY"):
            path = environ.get(PREFIX + suffix + "_FILE")
            raw = Path(path).read_text() if path else None
        if raw is None or raw == "":
            continue
        try:
            if field == "timeout_seconds":
                values[field] = float(raw)
            elif field == "notification_skew_seconds":
                values[field] = int(raw)
            else:
                values[field] = raw.strip()
        except ValueError as error:
            raise ChannelNotConfigured(
                f"{PREFIX}{suffix} is not a number", channel="alipay"
            ) from error
    if {"app_private_key", "alipay_public_key", "gateway_url"} & set(values):
        # Keys or a gateway set by hand mean a real app, not the sandbox's.
        values["sandbox"] = False
    return values


def as_pem(key: str, *, private: bool) -> str:
    """PEM text for a key given as PEM or as the bare Base64 the open platform
    shows; refused if it does not load."""
    text = key.strip()
    if not text.startswith("-----BEGIN"):
        body = "".join(text.split())
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        kind = "PRIVATE KEY" if private else "PUBLIC KEY"
        text = "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"])
    try:
        if private:
            serialization.load_pem_private_key(text.encode(), password=None)
        else:
            serialization.load_pem_public_key(text.encode())
    except ValueError as error:
        raise ChannelNotConfigured(
            f"the Alipay {'app private' if private else 'public'} key does not load",
            channel="alipay",
        ) from error
    return text + "\n"


def _fingerprint(public_pem: str) -> bytes:
    key = serialization.load_pem_public_key(public_pem.encode())
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public_fingerprint(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
