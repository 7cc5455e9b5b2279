"""The raw bill kept on disk: byte for byte, read-only, durable, written past the
page cache where the file system allows it and the ordinary way where not."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from payments.channels.base import Bill
from reconciliation.bills import kept
from reconciliation.bills.kept import keep_bill, write_to_disk

CHUNK = kept._CHUNK


def _content(size: int) -> bytes:
    # Not a repeating pattern a block-aligned mistake could reproduce.
    blocks = (hashlib.sha256(str(n).encode()).digest() for n in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def _bill(content: bytes) -> Bill:
    return Bill(
        channel="wechat",
        day=dt.date(2026, 3, 1),
        content=content,
        filename="trade_bill_all.csv",
        sha256=hashlib.sha256(content).hexdigest(),
    )


def _direct_allowed(folder: Path) -> bool:
    if not getattr(os, "O_DIRECT", 0):
        return False
    try:
        descriptor = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return False
    os.close(descriptor)
    return True


@pytest.mark.parametrize(
    "size",
    [0, 1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 4099],
)
def test_the_file_written_is_the_content_to_the_byte(tmp_path: Path, size: int) -> None:
    content = _content(size)
    path = tmp_path / "bill.csv"

    write_to_disk(path, content)

    assert path.read_bytes() == content


def test_a_file_left_longer_by_a_killed_run_is_written_over_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bill.csv"
    path.write_bytes(b"x" * (3 * CHUNK))

    write_to_disk(path, b"short")

    assert path.read_bytes() == b"short"


def test_where_the_file_system_allows_it_the_bill_goes_past_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_allowed(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    written = []
    direct = kept._write_direct

    def spy(descriptor: int, content: bytes) -> None:
        written.append(len(content))
        direct(descriptor, content)

    monkeypatch.setattr(kept, "_write_direct", spy)
    content = _content(CHUNK + 123)

    write_to_disk(tmp_path / "bill.csv", content)

    assert written == [len(content)]
    assert (tmp_path / "bill.csv").read_bytes() == content


def test_a_file_system_refusing_o_direct_gets_the_bill_the_ordinary_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_open = os.open

    def refusing(path, flags, *args):  # type: ignore[no-untyped-def]
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return plain_open(path, flags, *args)

    monkeypatch.setattr(kept, "_DIRECT", getattr(os, "O_DIRECT", 0) or 0o40000)
    monkeypatch.setattr(os, "open", refusing)
    content = _content(5000)

    write_to_disk(tmp_path / "bill.csv", content)

    assert (tmp_path / "bill.csv").read_bytes() == content


def test_writes_refused_past_the_page_cache_are_made_again_the_ordinary_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Opened with O_DIRECT, refused at the first write past what was written.
    def refused(descriptor: int, content: bytes) -> None:
        os.write(descriptor, content[:100])
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(kept, "_DIRECT", 1)
    monkeypatch.setattr(
        kept, "_open_direct", lambda path: os.open(path, os.O_WRONLY | os.O_CREAT)
    )
    monkeypatch.setattr(kept, "_write_direct", refused)
    content = _content(9000)

    write_to_disk(tmp_path / "bill.csv", content)

    assert (tmp_path / "bill.csv").read_bytes() == content


def test_a_full_disk_is_not_taken_for_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(descriptor: int, content: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kept, "_DIRECT", 1)
    monkeypatch.setattr(
        kept, "_open_direct", lambda path: os.open(path, os.O_WRONLY | os.O_CREAT)
    )
    monkeypatch.setattr(kept, "_write_direct", full)

    with pytest.raises(OSError, match="No space left"):
        write_to_disk(tmp_path / "bill.csv", b"content")


def test_a_kept_bill_is_read_only_under_its_day_and_checksum(tmp_path: Path) -> None:
    content = _content(70_000)
    bill = _bill(content)

    path = keep_bill(bill, tmp_path)

    assert path.parent == tmp_path / "bills" / "wechat"
    assert path.name == f"2026-03-01-{bill.sha256[:16]}-trade_bill_all.csv"
    assert path.read_bytes() == content
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert not list(path.parent.glob("*.part"))


def test_a_bill_kept_before_is_left_as_it_is(tmp_path: Path) -> None:
    bill = _bill(_content(1000))
    path = keep_bill(bill, tmp_path)
    first = path.stat()

    again = keep_bill(bill, tmp_path)

    assert again == path
    assert path.stat().st_mtime_ns == first.st_mtime_ns
    assert path.stat().st_ino == first.st_ino


def test_what_a_killed_run_left_half_written_is_replaced(tmp_path: Path) -> None:
    bill = _bill(_content(20_000))
    folder = tmp_path / "bills" / "wechat"
    folder.mkdir(parents=True)
    name = f"2026-03-01-{bill.sha256[:16]}-trade_bill_all.csv"
    (folder / f"{name}.part").write_bytes(b"half")

    path = keep_bill(bill, tmp_path)

    assert path.read_bytes() == bill.content
    assert not (folder / f"{name}.part").exists()
