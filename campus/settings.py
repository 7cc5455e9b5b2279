"""Settings read from ``CAMPUS_*`` environment variables.

Every setting has an embedded default that needs nothing installed, so that a fresh
checkout runs on SQLite in the instance folder with the sandbox channels. Production
mode refuses to start while any development default is still in force and names the
setting to change.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

PREFIX = "CAMPUS_"


class SettingsError(RuntimeError):
    """A setting is missing or holds a value that cannot be used."""


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"expected on/off, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str = "development"
    """``development`` (embedded defaults allowed) or ``production``."""

    instance_path: Path = Path("instance")
    """Folder for the SQLite database, the generated secret key, development keys
    and PKI, and stored files."""

    database_url: str = ""
    """SQLAlchemy URL. Empty means SQLite at ``<instance>/campus.sqlite3``.
    ``DATABASE_URL`` is read when ``CAMPUS_DATABASE_URL`` is not set."""

    secret_key: str = ""
    """Signs session cookies. Empty means a key generated on first run and kept in
    ``<instance>/secret_key``; production requires it to be set."""

    timezone: str = "Asia/Shanghai"
    """Time zone of the business day: limits, bills and settlements follow it."""

    channels: str = "sandbox"
    """``sandbox`` (built-in gateways with generated keys) or ``live``."""

    dev_signin: bool = True
    """Offer the clearly labelled development sign-in for students."""

    cas_server_url: str = ""
    """The university's CAS server, e.g. ``https://cas.example.edu.cn/cas/``.
    Students sign in there when set."""

    base_url: str = "http://127.0.0.1:5000"
    """Public address of this service, used in notification and return URLs."""

    log_format: str = ""
    """``text`` or ``json``. Empty means JSON lines in production, text otherwise."""

    log_level: str = "INFO"
    """Level of the root logger."""

    top_up_min_fen: int = 100
    """Smallest top-up, in fen (1 yuan)."""

    top_up_max_fen: int = 100_000
    """Largest single top-up, in fen (1,000 yuan)."""

    top_up_daily_cap_fen: int = 200_000
    """Most a card may be topped up per business day, in fen (2,000 yuan)."""

    top_up_expiry_minutes: int = 15
    """An unpaid top-up is closed at the channel after this long."""

    reconcile_hold_days: int = 3
    """Days an order we settled waits in the holding pool for its line in a later
    bill (one paid just before midnight may be in the next day's) before it becomes
    an ours-only discrepancy. The nightly run also goes back this many days to
    finish (and settle) a day whose run failed or was missed."""

    reconcile_fee_rate_wechat: int = 60
    """WeChat Pay's contract fee rate, in hundredths of a percent (60 is 0.6 %):
    reconciliation reports a day whose fees differ from it."""

    reconcile_fee_rate_alipay: int = 60
    """Alipay's contract fee rate, in hundredths of a percent (60 is 0.6 %)."""

    scheduler: bool = True
    """Run the periodic jobs (order queries, nightly reconciliation) inside the web
    process. Turn off when a cron job or systemd timer runs them instead."""

    rate_limit_storage: str = ""
    """Where Flask-Limiter keeps its counters, e.g. ``redis://redis:6379/1``.
    Empty means the memory of each web process, which is right for one process
    only: with several, each counts on its own and a limit multiplies.
    Production requires it to be set to a shared store."""

    sandbox_faults: str = ""
    """Faults the embedded sandbox switches on at start, for every order, e.g.
    ``wechat.notification=drop; alipay.user_paying_seconds=20``; the names are
    those on the sandbox's home page (``/sandbox/``), where they can also be
    changed while it runs. Ignored unless ``channels`` is ``sandbox``."""

    proxy_hops: int = 0
    """How many reverse proxies in front of the service set ``X-Forwarded-For``,
    ``-Proto`` and ``-Host`` (1 behind one nginx). Zero trusts none of them. Behind
    a proxy it must be set: the per-client rate limits and the logs would otherwise
    see every visitor as the proxy."""

    @property
    def production(self) -> bool:
        return self.mode == "production"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def rate_limit_storage_uri(self) -> str:
        return self.rate_limit_storage or "memory://"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.instance_path / 'campus.sqlite3').resolve()}"

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``), then apply
        ``overrides`` given in code, as tests do."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(PREFIX + field.name.upper())
            if raw is None and field.name == "database_url":
                raw = environ.get("DATABASE_URL")
            if raw is None:
                continue
            if field.type in ("bool", bool):
                values[field.name] = _flag(raw)
            elif field.type in ("int", int):
                try:
                    values[field.name] = int(raw)
                except ValueError as error:
                    raise SettingsError(
                        f"{PREFIX}{field.name.upper()} must be a whole number"
                    ) from error
            elif field.type in ("Path", Path):
                values[field.name] = Path(raw)
            else:
                values[field.name] = raw
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values that cannot work, and development defaults in
        production."""
        if self.mode not in {"development", "production"}:
            raise SettingsError(
                f"{PREFIX}MODE must be 'development' or 'production', not {self.mode!r}"
            )
        if self.channels not in {"sandbox", "live"}:
            raise SettingsError(f"{PREFIX}CHANNELS must be 'sandbox' or 'live'")
        if (
            not 0
            < self.top_up_min_fen
            <= self.top_up_max_fen
            <= self.top_up_daily_cap_fen
        ):
            raise SettingsError(
                f"{PREFIX}TOP_UP_MIN_FEN <= {PREFIX}TOP_UP_MAX_FEN <= "
                f"{PREFIX}TOP_UP_DAILY_CAP_FEN must hold, all above zero"
            )
        if self.reconcile_hold_days < 0:
            raise SettingsError(f"{PREFIX}RECONCILE_HOLD_DAYS must be 0 or more")
        for channel in ("wechat", "alipay"):
            if not 0 <= getattr(self, f"reconcile_fee_rate_{channel}") <= 10_000:
                raise SettingsError(
                    f"{PREFIX}RECONCILE_FEE_RATE_{channel.upper()} is in hundredths "
                    "of a percent, from 0 to 10000"
                )
        if self.proxy_hops < 0:
            raise SettingsError(f"{PREFIX}PROXY_HOPS must be 0 or more")
        if self.log_format not in {"", "text", "json"}:
            raise SettingsError(f"{PREFIX}LOG_FORMAT must be 'text' or 'json'")
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as error:
            raise SettingsError(f"{PREFIX}TIMEZONE: unknown zone") from error
        if not self.production:
            return
        refusals = []
        if not self.secret_key:
            refusals.append(f"{PREFIX}SECRET_KEY is not set")
        if self.sqlalchemy_url.startswith("sqlite"):
            refusals.append(f"{PREFIX}DATABASE_URL still points at SQLite")
        if self.channels == "sandbox":
            refusals.append(f"{PREFIX}CHANNELS is 'sandbox'")
        if self.dev_signin:
            refusals.append(f"{PREFIX}DEV_SIGNIN is on")
        if not self.cas_server_url:
            refusals.append(
                f"{PREFIX}CAS_SERVER_URL is not set (students could not sign in)"
            )
        if not self.base_url.startswith("https://"):
            refusals.append(
                f"{PREFIX}BASE_URL is not an https address (the channels' "
                "notifications and return URLs need the public one)"
            )
        if self.rate_limit_storage_uri.startswith("memory"):
            refusals.append(
                f"{PREFIX}RATE_LIMIT_STORAGE is the memory of one process (set a "
                "Redis URL)"
            )
        if refusals:
            raise SettingsError(
                "production mode refuses development defaults: " + "; ".join(refusals)
            )

    def resolved_secret_key(self) -> str:
        """The configured key, or the one generated on first run and kept in the
        instance folder."""
        if self.secret_key:
            return self.secret_key
        path = self.instance_path / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.instance_path.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # Created with owner-only permissions so that another local user cannot
        # forge session cookies.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process made it first; use theirs.
            return path.read_text().strip()
        with os.fdopen(fd, "w") as file:
            file.write(key)
        return key
