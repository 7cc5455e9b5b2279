"""The service's notion of now.

Real time, except in the embedded default with the sandbox mounted: there the
sandbox's movable clock is the world's clock, so that a person or a test who moves
it to tomorrow morning sees orders expire and yesterday's bills become ready, as the
channels on the other end of the wire do.
"""

from __future__ import annotations

import datetime as dt

from flask import current_app, has_app_context

from campus.database import utcnow


def now() -> dt.datetime:
    if has_app_context():
        sandbox = current_app.extensions.get("campus.sandbox")
        if sandbox is not None:
            return sandbox.clock.now()
    return utcnow()
