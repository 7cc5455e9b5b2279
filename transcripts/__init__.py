"""Academic records, bilingual signed PDF transcripts, the issuance registry, cohort
batches and graduates' share links.

Modules: ``records`` (students' academic details, courses, grade entries),
``importing`` (CSV and Excel from the academic affairs system), ``gpa`` (scales and
retake policies), ``document`` (the data a transcript shows, attached as JSON),
``layout`` and ``pdfa`` (the PDF), ``codes`` (verification codes), ``storage``
(issued files), ``registry`` (issuing, revoking, superseding, the audit trail),
``batches`` (cohorts over a process pool) and ``batch_queue`` (or over a Redis
queue), ``sharing`` (share links), ``views`` (students' and the registrar's pages
and API), ``cli`` (``flask transcripts``), ``demo`` (records for the demo
students).

The verification portal (by file, code, QR and share link, for employers) is the
next package's work; it reads ``registry.find_by_code``, ``find_by_sha256`` and
``sharing.open_link``. The QR code on every page points at ``/v/<code>``
(``TranscriptService.verify_url``), which that portal serves.
"""

from __future__ import annotations

from flask import Flask

from transcripts.config import TranscriptConfig
from transcripts.registry import EXTENSION, make_service


def init_app(app: Flask) -> None:
    """Read ``CAMPUS_TRANSCRIPTS_*``, keep the ``TranscriptService`` in the app,
    register the pages, the API and ``flask transcripts``."""
    from transcripts import cli, views

    config = TranscriptConfig.from_environ()
    if app.extensions["campus.settings"].production:
        config.check_production()
    app.extensions[EXTENSION] = make_service(app, config)
    views.init_app(app)
    cli.init_app(app)
