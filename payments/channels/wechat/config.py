"""WeChat Pay settings, read from ``CAMPUS_WECHAT_*`` environment variables.

With the app's ``channels`` setting at ``sandbox`` every field has a default taken
from the sandbox's generated keys in ``<instance>/sandbox/wechat/`` and the gateway
is ``<base_url>/sandbox/wechat``; an environment variable still wins over it. With
``live`` the merchant's own values are required, and production mode refuses the
sandbox's keys, merchant id and addresses outright.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from campus.settings import Settings
from payments.channels.base import ChannelNotConfigured

PREFIX = "CAMPUS_WECHAT_"
REAL_GATEWAY = "https://api.mch.weixin.qq.com"
REAL_AUTHORIZE = "https://open.weixin.qq.com/connect/oauth2/authorize"
REAL_OAUTH_API = "https://api.weixin.qq.com"
SANDBOX_MCHID = "1900000109"


@dataclasses.dataclass(frozen=True)
class WechatConfig:
    mchid: str
    """商户号: the merchant id WeChat Pay assigned (``CAMPUS_WECHAT_MCHID``)."""

    appid: str
    """The official account's (公众号) app id the orders are made under
    (``CAMPUS_WECHAT_APPID``); JSAPI openids belong to it."""

    app_secret: str
    """The official account's AppSecret, for the web OAuth code → openid exchange
    (``CAMPUS_WECHAT_APP_SECRET``)."""

    merchant_serial: str
    """Serial number of the merchant API certificate, named in every request's
    ``Authorization`` (``CAMPUS_WECHAT_MERCHANT_SERIAL``)."""

    private_key_pem: str = dataclasses.field(repr=False)
    """The merchant API private key (``apiclient_key.pem``), read from the file
    named by ``CAMPUS_WECHAT_PRIVATE_KEY_FILE``."""

    apiv3_key: str = dataclasses.field(repr=False)
    """The 32-character APIv3 key that seals notifications and platform
    certificates (``CAMPUS_WECHAT_APIV3_KEY``, or a file named by
    ``CAMPUS_WECHAT_APIV3_KEY_FILE``)."""

    platform_mode: str = "public_key"
    """How WeChat Pay's answers are verified (``CAMPUS_WECHAT_PLATFORM_MODE``):
    ``public_key`` (the platform public key and its ``PUB_KEY_ID_…``, the mode new
    merchants get) or ``certificate`` (platform certificates downloaded from
    ``/v3/certificates``, chosen by ``Wechatpay-Serial``, refreshed on rotation)."""

    public_key_pem: str | None = dataclasses.field(default=None, repr=False)
    """The platform public key, read from ``CAMPUS_WECHAT_PUBLIC_KEY_FILE``;
    required in ``public_key`` mode."""

    public_key_id: str | None = None
    """``PUB_KEY_ID_…`` of that key (``CAMPUS_WECHAT_PUBLIC_KEY_ID``)."""

    cert_dir: Path | None = None
    """Where downloaded platform certificates are kept between runs in
    ``certificate`` mode (``CAMPUS_WECHAT_CERT_DIR``); empty: download each start."""

    gateway_url: str = REAL_GATEWAY
    """The API's address (``CAMPUS_WECHAT_GATEWAY_URL``), without a trailing
    slash: the real one, or the sandbox's."""

    oauth_authorize_url: str = REAL_AUTHORIZE
    """Web OAuth's authorize page (``CAMPUS_WECHAT_OAUTH_AUTHORIZE_URL``)."""

    oauth_api_url: str = REAL_OAUTH_API
    """Where ``/sns/oauth2/access_token`` lives (``CAMPUS_WECHAT_OAUTH_API_URL``)."""

    timeout_seconds: float = 10.0
    """Read timeout of every call to WeChat Pay (``CAMPUS_WECHAT_TIMEOUT``); the
    connect timeout is the smaller of this and 5 seconds."""

    store_id: str = "campus"
    """Our store number sent with code payments as ``store_info.out_id``
    (``CAMPUS_WECHAT_STORE_ID``)."""

    notification_max_skew_seconds: int = 300
    """A notification stamped further than this from our clock is refused."""

    sandbox: bool = False
    """The values came from the sandbox's generated keys."""

    def __post_init__(self) -> None:
        if self.platform_mode not in {"public_key", "certificate"}:
            raise ChannelNotConfigured(
                f"{PREFIX}PLATFORM_MODE must be public_key or certificate",
                channel="wechat",
            )
        if self.platform_mode == "public_key" and not (
            self.public_key_pem and self.public_key_id
        ):
            raise ChannelNotConfigured(
                f"{PREFIX}PUBLIC_KEY_FILE and {PREFIX}PUBLIC_KEY_ID are required in"
                " public_key mode",
                channel="wechat",
            )

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> WechatConfig:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if settings.channels == "sandbox":
            values = _sandbox_defaults(settings)
        for name, reader in _READERS.items():
            raw = environ.get(PREFIX + name)
            if raw is not None and raw != "":
                field, value = reader(raw)
                values[field] = value
        missing = [
            f"{PREFIX}{name}"
            for name, field in _REQUIRED.items()
            if not values.get(field)
        ]
        if missing:
            raise ChannelNotConfigured(
                "WeChat Pay is not configured: set " + ", ".join(missing),
                channel="wechat",
            )
        config = cls(**values)  # type: ignore[arg-type]
        if settings.production:
            config.refuse_sandbox(settings)
        return config

    def refuse_sandbox(self, settings: Settings) -> None:
        """Production must never run on the sandbox's keys or addresses."""
        reasons = []
        if self.sandbox:
            reasons.append("the keys are the sandbox's")
        if self.mchid == SANDBOX_MCHID:
            reasons.append(f"{PREFIX}MCHID is the sandbox's")
        sandbox_keys = _sandbox_folder(settings)
        if sandbox_keys.exists():
            text = (
                (sandbox_keys / "apiclient_key.pem").read_text()
                if (sandbox_keys / "apiclient_key.pem").exists()
                else ""
            )
            if text and text.strip() == self.private_key_pem.strip():
                reasons.append(f"{PREFIX}PRIVATE_KEY_FILE holds the sandbox's key")
        for name, url in (
            ("GATEWAY_URL", self.gateway_url),
            ("OAUTH_API_URL", self.oauth_api_url),
        ):
            if not url.startswith("https://") or "/sandbox" in url:
                reasons.append(f"{PREFIX}{name} is not WeChat's https address")
        if reasons:
            raise ChannelNotConfigured(
                "production mode refuses sandbox WeChat Pay settings: "
                + "; ".join(reasons),
                channel="wechat",
            )


def _sandbox_folder(settings: Settings) -> Path:
    return Path(settings.instance_path) / "sandbox" / "wechat"


def _sandbox_defaults(settings: Settings) -> dict[str, object]:
    # The keys are made here if the sandbox has not run yet, so that the service
    # and its sandbox agree whichever starts first.
    from sandbox.wechat.keys import WechatKeys

    keys = WechatKeys.load_or_create(_sandbox_folder(settings))
    gateway = settings.base_url.rstrip("/") + "/sandbox/wechat"
    return {
        "mchid": keys.mchid,
        "appid": keys.appid,
        "app_secret": keys.app_secret,
        "merchant_serial": keys.merchant_serial,
        "private_key_pem": keys.merchant_key_pem,
        "apiv3_key": keys.apiv3_key,
        "public_key_pem": keys.public_key_pem,
        "public_key_id": keys.public_key_id,
        "gateway_url": gateway,
        "oauth_authorize_url": gateway + "/connect/oauth2/authorize",
        "oauth_api_url": gateway,
        "sandbox": True,
    }


def _text(field: str):  # type: ignore[no-untyped-def]
    return lambda raw: (field, raw.strip())


def _file(field: str):  # type: ignore[no-untyped-def]
    def read(raw: str) -> tuple[str, str]:
        try:
            return field, Path(raw).read_text()
        except OSError as error:
            raise ChannelNotConfigured(
                f"cannot read {raw}: {error.strerror}", channel="wechat"
            ) from error

    return read


_READERS = {
    "MCHID": _text("mchid"),
    "APPID": _text("appid"),
    "APP_SECRET": _text("app_secret"),
    "MERCHANT_SERIAL": _text("merchant_serial"),
    "PRIVATE_KEY_FILE": _file("private_key_pem"),
    "APIV3_KEY": _text("apiv3_key"),
    "APIV3_KEY_FILE": lambda raw: ("apiv3_key", _file("x")(raw)[1].strip()),
    "PLATFORM_MODE": _text("platform_mode"),
    "PUBLIC_KEY_FILE": _file("public_key_pem"),
    "PUBLIC_KEY_ID": _text("public_key_id"),
    "CERT_DIR": lambda raw: ("cert_dir", Path(raw)),
    "GATEWAY_URL": lambda raw: ("gateway_url", raw.strip().rstrip("/")),
    "OAUTH_AUTHORIZE_URL": _text("oauth_authorize_url"),
    "OAUTH_API_URL": lambda raw: ("oauth_api_url", raw.strip().rstrip("/")),
    "TIMEOUT": lambda raw: ("timeout_seconds", float(raw)),
    "STORE_ID": _text("store_id"),
}
_REQUIRED = {
    "MCHID": "mchid",
    "APPID": "appid",
    "APP_SECRET": "app_secret",
    "MERCHANT_SERIAL": "merchant_serial",
    "PRIVATE_KEY_FILE": "private_key_pem",
    "APIV3_KEY": "apiv3_key",
}
