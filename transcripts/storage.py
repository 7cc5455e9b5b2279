"""Where issued files are kept: an interface and its file-system implementation.

The registry stores each signed transcript under a key derived from its SHA-256
and keeps only the key. ``FileStorage`` is the embedded default; object storage
(S3, OSS, MinIO) is a second class with the same three methods, chosen by a
setting, and must pass ``tests/transcripts/test_storage.py`` too.

Errors::

    StorageError          a file could not be written or read
    └── StoredFileMissing the key names no stored file
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A file could not be written or read."""


class StoredFileMissing(StorageError):
    """The key names no stored file."""


class IssuanceStorage(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data``; return its key. Storing the same bytes twice returns
        the same key and keeps one copy."""

    def get(self, key: str) -> bytes:
        """The stored bytes, or ``StoredFileMissing``."""

    def exists(self, key: str) -> bool: ...


def key_for(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}.pdf"


class FileStorage:
    """Files under one folder, two levels of hash prefix deep so no folder
    grows past a few thousand entries."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StorageError(f"key {key!r} points outside the storage folder")
        return path

    def put(self, data: bytes) -> str:
        key = key_for(data)
        path = self._path(key)
        if path.exists():
            return key
        # Written to a temporary name and renamed, so that a crash never leaves a
        # half-written file under a real key.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:
            raise StorageError(f"cannot store {key}: {error}") from error
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as error:
            raise StoredFileMissing(key) from error
        except OSError as error:
            raise StorageError(f"cannot read {key}: {error}") from error

    def exists(self, key: str) -> bool:
        return self._path(key).exists()
