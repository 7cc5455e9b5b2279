"""Academic records, bilingual signed PDF transcripts, the issuance registry, share
links and verification."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Bind transcripts to the app: blueprints, CLI. Filled in by the transcripts
    issue."""
