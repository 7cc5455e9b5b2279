"""Alipay settings: sandbox defaults, environment variables, production refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from campus.settings import Settings
from payments.channels.alipay import AlipayChannel, AlipayConfig
from payments.channels.base import ChannelNotConfigured
from sandbox.alipay import testing
from sandbox.alipay.keys import ensure_keys

alipay_keys = testing.alipay_keys


def production(instance: Path) -> Settings:
    return Settings(
        mode="production",
        channels="live",
        instance_path=instance,
        secret_key="s" * 40,
        dev_signin=False,
        database_url="postgresql+psycopg://db.example/campus",
    )


def bare(pem: str) -> str:
    """The key as the open platform's key tool prints it: Base64, no armour."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def live_environ(keys) -> dict[str, str]:
    return {
        "CAMPUS_ALIPAY_APP_ID": "2021004100000000",
        "CAMPUS_ALIPAY_APP_PRIVATE_KEY": bare(keys.app_private_key),
        "CAMPUS_ALIPAY_PUBLIC_KEY": bare(keys.alipay_public_key),
        "CAMPUS_ALIPAY_SELLER_ID": "2088000000000001",
    }


def test_sandbox_defaults_come_from_the_generated_keys(alipay_keys):
    settings = Settings(instance_path=alipay_keys, base_url="http://campus.test/")
    keys = ensure_keys(alipay_keys)

    config = AlipayConfig.from_settings(settings, environ={})

    assert config.sandbox
    assert config.app_id == keys.app_id and config.seller_id == keys.seller_id
    assert config.alipay_public_key.strip() == keys.alipay_public_key.strip()
    assert config.gateway_url == "http://campus.test/sandbox/alipay/gateway.do"
    assert config.authorize_url.startswith("http://campus.test/sandbox/alipay/")
    assert "PRIVATE" not in repr(config)


def test_a_variable_set_by_hand_wins_over_the_sandbox_default(alipay_keys):
    settings = Settings(instance_path=alipay_keys)

    slower = AlipayConfig.from_settings(
        settings, environ={"CAMPUS_ALIPAY_TIMEOUT_SECONDS": "3.5"}
    )
    elsewhere = AlipayConfig.from_settings(
        settings, environ={"CAMPUS_ALIPAY_GATEWAY_URL": "https://gw.test/gateway.do"}
    )

    assert slower.timeout_seconds == 3.5 and slower.sandbox
    assert elsewhere.gateway_url == "https://gw.test/gateway.do"
    assert not elsewhere.sandbox


def test_live_channels_name_the_missing_variables(tmp_path):
    settings = Settings(channels="live", instance_path=tmp_path)
    with pytest.raises(ChannelNotConfigured) as missing:
        AlipayConfig.from_settings(settings, environ={})
    assert "CAMPUS_ALIPAY_APP_PRIVATE_KEY" in str(missing.value)


def test_bare_base64_keys_and_key_files_are_accepted(tmp_path):
    keys = ensure_keys(tmp_path / "a-live-app")
    private_file = tmp_path / "app.key"
    private_file.write_text(keys.app_private_key)
    environ = live_environ(keys)
    del environ["CAMPUS_ALIPAY_APP_PRIVATE_KEY"]
    environ["CAMPUS_ALIPAY_APP_PRIVATE_KEY_FILE"] = str(private_file)

    config = AlipayConfig.from_settings(production(tmp_path / "instance"), environ)

    assert config.alipay_public_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert config.gateway_url == "https://openapi.alipay.com/gateway.do"
    assert not config.sandbox


def test_a_key_that_does_not_load_is_refused(tmp_path):
    environ = live_environ(ensure_keys(tmp_path / "a-live-app"))
    environ["CAMPUS_ALIPAY_PUBLIC_KEY"] = "bm90IGEga2V5"
    with pytest.raises(ChannelNotConfigured):
        AlipayConfig.from_settings(production(tmp_path / "instance"), environ)


def test_production_refuses_the_sandbox_keys(alipay_keys):
    environ = live_environ(ensure_keys(alipay_keys))
    with pytest.raises(ChannelNotConfigured) as refused:
        AlipayConfig.from_settings(production(alipay_keys), environ)
    assert "sandbox" in str(refused.value)


def test_production_refuses_the_sandbox_gateway(tmp_path):
    environ = live_environ(ensure_keys(tmp_path / "a-live-app"))
    environ["CAMPUS_ALIPAY_GATEWAY_URL"] = (
        "https://campus.test/sandbox/alipay/gateway.do"
    )
    with pytest.raises(ChannelNotConfigured):
        AlipayConfig.from_settings(production(tmp_path / "instance"), environ)


def test_from_app_uses_the_app_settings(app):
    moment = dt.datetime(2026, 9, 1, 4, 0, tzinfo=dt.UTC)
    channel = AlipayChannel.from_app(app, clock=lambda: moment)
    settings = app.extensions["campus.settings"]
    stamp = channel._sdk.build_body("alipay.trade.query", {})["timestamp"]

    assert channel.config.sandbox
    assert channel.config.gateway_url == (
        f"{settings.base_url.rstrip('/')}/sandbox/alipay/gateway.do"
    )
    assert (Path(settings.instance_path) / "sandbox" / "alipay").is_dir()
    assert stamp == "2026-09-01 12:00:00"


def test_the_config_is_frozen(alipay_keys):
    config = AlipayConfig.from_settings(Settings(instance_path=alipay_keys), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout_seconds = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://dwbillcenter.alipay.com/downloadBillFile.resource?x=1", True),
        ("https://openapi.alipay.com/bill.zip", True),
        ("http://127.0.0.1:5000/sandbox/alipay/bills/x.zip", True),
        ("http://127.0.0.1:6379/", False),  # the gateway's host, another port
        ("http://169.254.169.254/latest/meta-data/", False),
        ("https://alipay.com.evil.example/bill.zip", False),
        ("file:///etc/passwd", False),
        ("", False),
    ],
)
def test_a_bill_is_fetched_only_from_alipay_or_the_gateway_host(url, allowed):
    from payments.channels.alipay.channel import bill_host_allowed

    assert (
        bill_host_allowed(url, "http://127.0.0.1:5000/sandbox/alipay/gateway.do")
        is allowed
    )


def test_an_alipay_bill_offered_over_http_is_fetched_over_https():
    from payments.channels.alipay.channel import bill_fetch_url

    offered = "http://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade"

    assert bill_fetch_url(offered) == offered.replace("http://", "https://", 1)
    sandbox = "http://127.0.0.1:5000/sandbox/alipay/bills/x.zip"
    assert bill_fetch_url(sandbox) == sandbox
