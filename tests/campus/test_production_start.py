"""Production refuses to start, naming what is missing, before it serves anyone."""

from __future__ import annotations

import pytest

from campus import create_app
from campus.settings import Settings
from payments.channels.base import ChannelNotConfigured

PRODUCTION = {
    "CAMPUS_MODE": "production",
    "CAMPUS_SECRET_KEY": "a long random production secret, not a default",
    # Never connected to: the refusal comes before the first query.
    "CAMPUS_DATABASE_URL": "postgresql+psycopg://campus@db.invalid/campus",
    "CAMPUS_CHANNELS": "live",
    "CAMPUS_DEV_SIGNIN": "off",
    "CAMPUS_RATE_LIMIT_STORAGE": "redis://redis.invalid:6379/1",
    "CAMPUS_CAS_SERVER_URL": "https://cas.example.edu.cn/cas/",
    "CAMPUS_BASE_URL": "https://card.example.edu.cn",
}


def test_production_without_merchant_settings_refuses_to_start(tmp_path):
    settings = Settings.from_environ(
        {**PRODUCTION, "CAMPUS_INSTANCE_PATH": str(tmp_path)}
    )

    with pytest.raises(ChannelNotConfigured) as refused:
        create_app(settings)

    assert "CAMPUS_WECHAT_MCHID" in str(refused.value)
