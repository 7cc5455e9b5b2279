"""``read_trade_bill`` in a forked process, while this one does something else.

A night's WeChat bill of a million lines takes seconds of the interpreter to read,
and so does loading the day's orders to match it against; on two cores the two
can overlap. ``ForkedTradeBill(content)`` forks at once: the child reads the bill
(shared with us copy-on-write, never copied) and writes its entries in batches
(``marshal``) to an unlinked temporary file, announcing each batch's size on a
pipe; we read them back when we want them, as ``read_trade_bill``'s own entries,
its ``BillFormatError`` included, raised where it would have been.

The child never waits for us: the file takes what the child writes however late
we read it, and the pipe carries nine bytes a batch (a million lines need a few
kilobytes, well inside a pipe's buffer). A pipe or a queue carrying the batches
themselves would not do: whichever side holds the interpreter lock in a long
loop starves the thread that moves the data.

The child runs only pure Python that is already imported (the parser, marshal,
pickle, ``os`` writes): no logging, no database, no imports, so nothing another thread
held at the fork can block it, and it leaves with ``os._exit`` (as
``multiprocessing`` children do), closing none of the connections it inherited.
What is read back comes from our own fork, through a file nobody else can open,
so unmarshalling and unpickling it trusts no outsider.

Only where ``fork`` exists (Linux, macOS); ``available()`` says whether it does.
"""

from __future__ import annotations

import datetime as dt
import gc
import marshal
import multiprocessing
import os
import pickle
import struct
import tempfile
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from reconciliation.bills.wechat import BillFormatError, TradeEntry, read_trade_bill

BATCH = 5000
"""Entries per batch written."""

_HEADER = struct.Struct("<cQ")
_ENTRIES, _END, _REFUSED, _CRASHED = b"B", b"E", b"F", b"X"


def available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class ReaderFailed(RuntimeError):
    """The child reading the bill died, or failed other than on the bill."""


class ForkedTradeBill:
    """Iterate for ``read_trade_bill(content)``'s entries, read in a child
    forked on construction; ``close`` (or leaving the ``with``) stops the child
    if it still runs and frees what it wrote."""

    def __init__(self, content: bytes) -> None:
        self._data = tempfile.TemporaryFile(prefix="trade-bill-")
        self._notes, notes_out = os.pipe()
        self._offset = 0
        self._times = _Times()
        try:
            self._child = multiprocessing.get_context("fork").Process(
                target=_read_aside,
                args=(content, self._data.fileno(), notes_out),
                name="trade-bill-reader",
                daemon=True,
            )
            self._child.start()
        except BaseException:
            os.close(self._notes)
            self._data.close()
            raise
        finally:
            # Ours closed, the pipe ends when the child does: a child that dies
            # without a word is seen as the end of the pipe.
            os.close(notes_out)

    def __iter__(self) -> Iterator[TradeEntry]:
        for columns in self.batches():
            yield from zip(*columns, strict=True)

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        """The entries in batches by column: the first column the entries'
        first fields (their lines), the second their times, and so on."""
        while True:
            kind, payload = self._next()
            if kind == _ENTRIES:
                columns = [
                    column if type(column) is tuple else (column[0],) * column[1]
                    for column in marshal.loads(payload)
                ]
                columns[1] = tuple(map(self._times.__getitem__, columns[1]))
                yield columns
            elif kind == _END:
                return
            elif kind == _REFUSED:
                text, line = pickle.loads(payload)
                error = BillFormatError(text)
                error.line = line
                raise error
            else:
                raise ReaderFailed(f"the bill reader failed: {pickle.loads(payload)}")

    def _next(self) -> tuple[bytes, bytes]:
        header = b""
        while len(header) < _HEADER.size:
            more = os.read(self._notes, _HEADER.size - len(header))
            if not more:
                self._child.join()
                raise ReaderFailed(
                    f"the bill reader stopped (exit code {self._child.exitcode})"
                )
            header += more
        kind, size = _HEADER.unpack(header)
        payload = os.pread(self._data.fileno(), size, self._offset)
        if len(payload) != size:
            raise ReaderFailed("the bill reader's output is cut short")
        self._offset += size
        return kind, payload

    def close(self) -> None:
        if self._child.is_alive():
            self._child.terminate()
        self._child.join()
        self._child.close()
        os.close(self._notes)
        self._data.close()

    def __enter__(self) -> ForkedTradeBill:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Times(dict[float, dt.datetime]):
    """A bill time from its Unix seconds, each second made once: a bill's times
    are those ``read_trade_bill`` gives, China Standard Time (UTC+8)."""

    def __missing__(self, seconds: float) -> dt.datetime:
        self[seconds] = value = dt.datetime.fromtimestamp(seconds, _CHINA)
        return value


_CHINA = dt.timezone(dt.timedelta(hours=8))


def _read_aside(content: bytes, data: int, notes: int) -> None:
    """The child: every entry, then the end; or the bill's refusal."""
    offset = 0

    def put(kind: bytes, payload: bytes) -> None:
        nonlocal offset
        written = 0
        while written < len(payload):
            written += os.pwrite(data, payload[written:], offset + written)
        offset += written
        os.write(notes, _HEADER.pack(kind, written))

    # The collector would walk every object inherited from the parent, and so
    # copy the pages it marks; the child makes no cycles worth collecting.
    gc.disable()

    def send(batch: list[TradeEntry]) -> None:
        # By column, the times as Unix seconds: ``marshal`` takes nothing else
        # of an entry, and is several times faster than pickling the tuples.
        columns = list(zip(*batch, strict=True))
        times = columns[1]
        # Rows of one second share their time object: each is turned into
        # seconds once (the objects live while the batch does, so ids are safe).
        distinct = dict(zip(map(id, times), times, strict=True))
        seconds = {key: time.timestamp() for key, time in distinct.items()}
        columns[1] = tuple(map(seconds.__getitem__, map(id, times)))
        # A column of one value (a day's refund cells are mostly empty, its
        # states all SUCCESS) goes as [value, count]: half the columns, a
        # fraction of the work on both sides.
        put(
            _ENTRIES,
            marshal.dumps(
                [
                    [column[0], len(column)]
                    if column.count(column[0]) == len(column)
                    else column
                    for column in columns
                ]
            ),
        )

    try:
        batch: list[TradeEntry] = []
        for entry in read_trade_bill(content):
            batch.append(entry)
            if len(batch) == BATCH:
                send(batch)
                batch = []
        if batch:
            send(batch)
        put(_END, b"")
    except BillFormatError as error:
        put(_REFUSED, pickle.dumps((str(error), error.line)))
    except Exception as error:  # noqa: BLE001 - reported to the parent, who raises
        put(_CRASHED, pickle.dumps(repr(error)))
