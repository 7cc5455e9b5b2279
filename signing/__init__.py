"""Document signing: development PKI, PAdES signer, validation.

Other packages use the service the app keeps::

    from signing import signing_service
    signed = signing_service().sign(pdf_bytes)          # B-LTA by default
    report = signing_service().validate(signed)         # report.ok, report.summary

Modules: ``config`` (``CAMPUS_SIGNING_*`` settings), ``devpki`` (the development
PKI and its loopback TSA, OCSP and CRLs), ``keys`` (PKCS#12 and PKCS#11 keys),
``signer``, ``validator``, ``service`` (ties them together), ``cli`` (``flask
signing``), ``errors`` (the exception tree). Nothing here knows what is signed.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app

from signing.config import SigningConfig
from signing.service import SigningService

EXTENSION = "campus.signing"

# pyHanko logs each intermediate failure of AdES validation at WARNING, and each
# refused modification at ERROR, with a traceback, also when the final answer is
# PASSED (e.g. "CRL is not recent enough" before it validates in the past). Our
# reports say what failed; these would bury real errors.
QUIET_LOGGERS = (
    "pyhanko.sign.validation.generic_cms",
    "pyhanko.sign.validation.ades",
    "pyhanko.sign.diff_analysis.policies",
)


def init_app(app: Flask) -> None:
    """Read ``CAMPUS_SIGNING_*``, keep a ``SigningService`` in the app (nothing is
    loaded or generated yet), and add ``flask signing``. Production mode refuses a
    configuration that would use the development PKI."""
    from signing.cli import signing_group

    settings = app.extensions["campus.settings"]
    config = SigningConfig.from_environ()
    app.extensions[EXTENSION] = SigningService(
        config, settings.instance_path, production=settings.production
    )
    app.cli.add_command(signing_group)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def signing_service(app: Flask | None = None) -> SigningService:
    """The app's signing service (the current app's by default)."""
    app = app or current_app
    return app.extensions[EXTENSION]  # type: ignore[no-any-return]
