"""Transcript settings, read from ``CAMPUS_TRANSCRIPTS_*`` environment variables.

Every setting has an embedded default so that a fresh checkout issues transcripts
for a demonstration university with files in the instance folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from campus.settings import SettingsError

PREFIX = "CAMPUS_TRANSCRIPTS_"
BATCH_BACKENDS = ("process", "rq")
DEVELOPMENT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclasses.dataclass(frozen=True)
class TranscriptConfig:
    university_zh: str = "示范大学"
    """The university's name in Chinese, as printed at the top of every page."""

    university_en: str = "Demonstration University"
    """The university's name in English."""

    registrar_zh: str = "教务处"
    """The issuing office in Chinese; also the PDF's author."""

    registrar_en: str = "Office of the Registrar"
    """The issuing office in English."""

    gpa_scale: str = "4.0-standard"
    """Name of the grade-point scale (``transcripts.gpa.SCALES``)."""

    retake_policy: str = "highest"
    """How repeated attempts of one course count: ``highest``, ``latest`` or
    ``all`` (``transcripts.gpa.RetakePolicy``)."""

    cap_makeup: bool = True
    """Count a passed make-up examination as 60, the usual rule of Chinese
    universities (补考及格按 60 分计)."""

    validity_days: int = 365
    """How long an issued transcript is valid; the verification page says
    "expired" afterwards."""

    storage_path: Path | None = None
    """Folder of issued files. Empty means ``<instance>/transcripts/files``."""

    workers: int = 0
    """Worker processes of a batch. 0 means one per CPU."""

    batch_backend: str = "process"
    """``process``: a pool of worker processes on this machine. ``rq``: one job
    per student in a Redis queue, issued by ``flask transcripts worker``
    processes on any machine that shares the database, the storage and the
    signing key (see ``transcripts.batch_queue``)."""

    redis_url: str = ""
    """Redis of the ``rq`` backend. Empty means ``redis://127.0.0.1:6379/0``;
    production mode requires it to be set when the backend is ``rq``."""

    queue: str = "transcripts"
    """Name of the RQ queue (letters, digits, ``-`` and ``_``). Job ids are
    made from it, so two deployments sharing one Redis need different names."""

    on_demand_limit: str = "5 per hour"
    """Rate limit of a graduate's on-demand issuance (Flask-Limiter syntax)."""

    share_link_max_days: int = 90
    """Longest expiry a graduate may give a share link."""

    signing_level: str = ""
    """PAdES level for transcripts. Empty means the signing service's default
    (B-LTA)."""

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> TranscriptConfig:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(PREFIX + field.name.upper())
            if raw is None:
                continue
            if field.type in ("int", int):
                try:
                    values[field.name] = int(raw)
                except ValueError as error:
                    raise SettingsError(
                        f"{PREFIX}{field.name.upper()} must be a whole number"
                    ) from error
            elif field.type in ("bool", bool):
                values[field.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            elif "Path" in str(field.type):
                values[field.name] = Path(raw) if raw else None
            else:
                values[field.name] = raw
        values.update(overrides)
        config = cls(**values)  # type: ignore[arg-type]
        config.check()
        return config

    def check(self) -> None:
        from transcripts.gpa import SCALES, RetakePolicy

        if self.gpa_scale not in SCALES:
            raise SettingsError(
                f"{PREFIX}GPA_SCALE must be one of {', '.join(sorted(SCALES))}"
            )
        try:
            RetakePolicy(self.retake_policy)
        except ValueError as error:
            raise SettingsError(
                f"{PREFIX}RETAKE_POLICY must be highest, latest or all"
            ) from error
        if self.batch_backend not in BATCH_BACKENDS:
            raise SettingsError(f"{PREFIX}BATCH_BACKEND must be 'process' or 'rq'")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.queue):
            raise SettingsError(
                f"{PREFIX}QUEUE may hold only letters, digits, '-' and '_'"
            )
        if self.validity_days < 1:
            raise SettingsError(f"{PREFIX}VALIDITY_DAYS must be at least 1")

    def check_production(self) -> None:
        """Refuse development defaults that production must not rely on."""
        if self.batch_backend == "rq" and not self.redis_url:
            raise SettingsError(
                "production mode refuses development defaults: "
                f"{PREFIX}REDIS_URL is not set ({PREFIX}BATCH_BACKEND is 'rq')"
            )

    @property
    def resolved_redis_url(self) -> str:
        return self.redis_url or DEVELOPMENT_REDIS_URL

    def files_path(self, instance_path: Path) -> Path:
        return self.storage_path or instance_path / "transcripts" / "files"
