"""Every table of transcripts, imported together for ``campus.models``."""

from __future__ import annotations

from transcripts.batches import Batch, BatchItem
from transcripts.records import Course, GradeEntry, StudentRecord
from transcripts.registry import Issuance, IssuanceEvent
from transcripts.sharing import ShareLink, ShareLinkEvent
from transcripts.verification import VerificationRecord

__all__ = [
    "Batch",
    "BatchItem",
    "Course",
    "GradeEntry",
    "Issuance",
    "IssuanceEvent",
    "ShareLink",
    "ShareLinkEvent",
    "StudentRecord",
    "VerificationRecord",
]
