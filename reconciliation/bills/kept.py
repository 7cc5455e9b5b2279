"""The raw bill as the channel gave it, kept on disk for as long as finance needs
it: written once, flushed to the disk before the run that read it records
anything, then read-only.

A busy day's WeChat Pay bill is a quarter of a GiB that nobody reads again until
an auditor asks. Written the ordinary way it would first be copied into a
quarter of a GiB of freshly allocated page cache, the costliest part of keeping
it (on a virtual machine whose memory the host hands out on first touch, half a
second of CPU on a night's run), and would push the database's cached pages out
for a file not read again. So it goes straight to the disk (``O_DIRECT``) from
one small aligned buffer, where the system and the file system allow that, and
the ordinary way where they do not (macOS, Windows, some network and in-memory
file systems).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from pathlib import Path

from payments.channels.base import Bill

logger = logging.getLogger(__name__)

_CHUNK = 8 << 20
"""Bytes written at a time past the page cache: a multiple of every block size."""
_ALIGN = 4096
"""What a direct write's length must be a multiple of: the largest logical block
size in common use (512 and 4096)."""
_DIRECT = getattr(os, "O_DIRECT", 0)


def keep_bill(bill: Bill, instance: Path) -> Path:
    """Store ``bill`` as downloaded under ``instance``/bills, once, read-only and
    on the disk; its path. A bill already kept (same day and checksum) is left as
    it is."""
    folder = instance / "bills" / bill.channel
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bill.day.isoformat()}-{bill.sha256[:16]}-{bill.filename}"
    if path.exists():
        return path
    # Written under another name and renamed once whole, so that a run killed
    # while writing leaves no kept file that is only part of the bill (its
    # leftover is written over by the next run).
    temporary = path.with_suffix(path.suffix + ".part")
    write_to_disk(temporary, bill.content)
    os.chmod(temporary, 0o444)
    temporary.replace(path)
    _sync_directory(folder)
    logger.info(
        "bill_kept",
        extra={"channel": bill.channel, "day": str(bill.day), "path": str(path)},
    )
    return path


def write_to_disk(path: Path, content: bytes) -> None:
    """Write ``content`` as the whole of the file ``path`` (made, or emptied) and
    flush it to the disk, past the page cache where that is allowed."""
    descriptor = _open_direct(path) if _DIRECT and content else None
    if descriptor is not None:
        try:
            _write_direct(descriptor, content)
        except OSError as error:
            os.close(descriptor)
            if error.errno != errno.EINVAL:
                raise
            # The file system took O_DIRECT when opening but refuses the writes
            # (a block size larger than ours, say): the ordinary way then.
            descriptor = None
        else:
            _close_synced(descriptor)
            return
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(descriptor, memoryview(content))
    except BaseException:
        os.close(descriptor)
        raise
    _close_synced(descriptor)


def _open_direct(path: Path) -> int | None:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _DIRECT, 0o644)
    except OSError as error:
        if error.errno == errno.EINVAL:
            return None
        raise


def _write_direct(descriptor: int, content: bytes) -> None:
    """Every chunk copied into one page-aligned buffer (an anonymous map) and
    written from it; the last one padded with zeros to the block size, and the
    file cut back to the content's length after."""
    source = memoryview(content)
    with mmap.mmap(-1, _CHUNK) as aligned:
        buffer = memoryview(aligned)
        try:
            for start in range(0, len(source), _CHUNK):
                piece = source[start : start + _CHUNK]
                size = len(piece)
                buffer[:size] = piece
                padded = -(-size // _ALIGN) * _ALIGN
                buffer[size:padded] = bytes(padded - size)
                _write_all(descriptor, buffer[:padded])
        finally:
            buffer.release()
    os.ftruncate(descriptor, len(source))


def _write_all(descriptor: int, view: memoryview) -> None:
    written = 0
    while written < len(view):
        written += os.write(descriptor, view[written:])


def _close_synced(descriptor: int) -> None:
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows has no directory to open)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
