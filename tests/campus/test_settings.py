from __future__ import annotations

import pytest

from campus.settings import Settings, SettingsError

PRODUCTION_READY = {
    "CAMPUS_MODE": "production",
    "CAMPUS_SECRET_KEY": "a long random production secret",
    "CAMPUS_DATABASE_URL": "postgresql+psycopg://campus@db.example/campus",
    "CAMPUS_CHANNELS": "live",
    "CAMPUS_DEV_SIGNIN": "off",
    "CAMPUS_RATE_LIMIT_STORAGE": "redis://redis.example:6379/1",
    "CAMPUS_CAS_SERVER_URL": "https://cas.example.edu.cn/cas/",
    "CAMPUS_BASE_URL": "https://card.example.edu.cn",
}


def test_embedded_defaults_need_nothing(tmp_path):
    settings = Settings.from_environ({"CAMPUS_INSTANCE_PATH": str(tmp_path)})

    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'campus.sqlite3'}"
    assert settings.timezone == "Asia/Shanghai"
    assert settings.channels == "sandbox" and settings.dev_signin


def test_the_secret_key_is_generated_once_and_kept(tmp_path):
    settings = Settings(instance_path=tmp_path)

    first = settings.resolved_secret_key()

    assert len(first) >= 48
    assert settings.resolved_secret_key() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_database_url_falls_back_to_the_common_variable():
    settings = Settings.from_environ({"DATABASE_URL": "postgresql://x/y"})

    assert settings.sqlalchemy_url == "postgresql://x/y"


def test_production_with_every_setting_starts():
    assert Settings.from_environ(PRODUCTION_READY).production


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("CAMPUS_SECRET_KEY", "CAMPUS_SECRET_KEY is not set"),
        ("CAMPUS_DATABASE_URL", "CAMPUS_DATABASE_URL still points at SQLite"),
        ("CAMPUS_CHANNELS", "CAMPUS_CHANNELS is 'sandbox'"),
        ("CAMPUS_DEV_SIGNIN", "CAMPUS_DEV_SIGNIN is on"),
        ("CAMPUS_RATE_LIMIT_STORAGE", "CAMPUS_RATE_LIMIT_STORAGE is the memory"),
        ("CAMPUS_CAS_SERVER_URL", "CAMPUS_CAS_SERVER_URL is not set"),
        ("CAMPUS_BASE_URL", "CAMPUS_BASE_URL is not an https address"),
    ],
)
def test_production_refuses_each_development_default_by_name(missing, named):
    environ = {key: value for key, value in PRODUCTION_READY.items() if key != missing}

    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(environ)

    assert named in str(refused.value)


@pytest.mark.parametrize(
    "environ",
    [
        {"CAMPUS_MODE": "staging"},
        {"CAMPUS_DEV_SIGNIN": "maybe"},
        {"CAMPUS_TIMEZONE": "Mars/Olympus"},
        {"CAMPUS_CHANNELS": "paypal"},
    ],
)
def test_impossible_values_are_refused(environ):
    with pytest.raises(SettingsError):
        Settings.from_environ(environ)


def test_a_forwarded_address_is_not_trusted_by_default():
    assert Settings.from_environ({}).proxy_hops == 0
    with pytest.raises(SettingsError, match="PROXY_HOPS"):
        Settings.from_environ({"CAMPUS_PROXY_HOPS": "-1"})
