"""Every package's models, imported so that Alembic and tests see one metadata.

Transcripts and reconciliation add their modules here when their tables arrive.
"""

from __future__ import annotations

import campus.auth
import campus.people
import payments.models
import reconciliation.models  # noqa: F401 - registers the tables
import reconciliation.settlement  # noqa: F401 - registers the tables
import transcripts.models  # noqa: F401 - registers the tables
from campus.database import Base

metadata = Base.metadata

__all__ = ["campus", "metadata", "payments"]
