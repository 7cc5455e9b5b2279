"""Document signing: development PKI, PAdES signer, validation."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Bind signing to the app: settings, CLI. Filled in by the signing issue."""
