"""``read_trade_bill`` in forked processes, while this one does something else.

A night's WeChat bill of a million lines takes seconds of the interpreter to read,
and so does loading the day's orders to match it against; on two cores they can
overlap. ``ForkedTradeBill(content)`` forks at once: two children each read half
of the bill (shared with us copy-on-write, never copied; one child reads a bill
that cannot be cut) and write their entries in batches (``marshal``) to unlinked
temporary files, announcing each batch's size on a pipe; we read them back when
we want them, as ``read_trade_bill``'s own entries, its ``BillFormatError``
included, raised where it would have been.

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
import logging
import marshal
import multiprocessing
import os
import pickle
import signal
import struct
import tempfile
import traceback
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType
from typing import Any

from reconciliation.bills.wechat import (
    BillFormatError,
    TradeEntry,
    TradeTally,
    check_parts,
    read_trade_bill,
    read_trade_bill_part,
    second_part,
    split_point,
)

logger = logging.getLogger(__name__)

BATCH = 5000
"""Entries per batch written."""

_HEADER = struct.Struct("<cQ")
_ENTRIES, _END, _REFUSED, _CRASHED, _UNSPLIT = b"B", b"E", b"F", b"X", b"U"


def _columns_of(entries: Iterable[TradeEntry]) -> Iterator[list[tuple[Any, ...]]]:
    """``entries`` in batches of up to ``BATCH``, by column."""
    batch: list[TradeEntry] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == BATCH:
            yield list(zip(*batch, strict=True))
            batch = []
    if batch:
        yield list(zip(*batch, strict=True))


def available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class ReaderFailed(RuntimeError):
    """The child reading the bill died, or failed other than on the bill."""


class ForkedTradeBill:
    """Iterate for ``read_trade_bill(content)``'s entries, read in children
    forked on construction: two, each reading half, where the bill can be cut
    (``wechat.split_point``), else one. ``close`` (or leaving the ``with``) stops
    the children still running and frees what they wrote."""

    def __init__(self, content: bytes) -> None:
        self._content = content
        part = split_point(content)
        self._readers: list[_Reader] = []
        try:
            if part is None:
                self._readers.append(_Reader(content, None, first=True))
            else:
                self._readers.append(_Reader(content, part, first=True))
                self._readers.append(_Reader(content, part, first=False))
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[TradeEntry]:
        for columns in self.batches():
            yield from zip(*columns, strict=True)

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        """The entries in batches by column: the first column the entries'
        first fields (their lines), the second their times, and so on. For a bill
        read in two parts, the checks ``read_trade_bill`` makes after its last
        row are made here, once both parts are in (``wechat.check_parts``)."""
        if len(self._readers) == 2 and self._readers[1].unsplit():
            # The second reader found the cut unusable (a pathological bill):
            # the whole bill is read here instead, as it would be without fork.
            self.close()
            yield from _columns_of(read_trade_bill(self._content))
            return
        if len(self._readers) == 1:
            yield from self._readers[0].batches()
            return
        first = yield from self._readers[0].batches()
        second_line: int | None = None
        reading = self._readers[1].batches()
        while True:
            try:
                columns = next(reading)
            except StopIteration as end:
                second = end.value
                break
            except BillFormatError as refused:
                if first.summary is not None and refused.line is not None:
                    check_parts(first, TradeTally(), refused.line)
                raise
            if second_line is None:
                second_line = columns[0][0]
                if first.summary is not None:
                    check_parts(first, TradeTally(), second_line)
            yield columns
        check_parts(first, second, second_line or second.summary_line)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()

    def __enter__(self) -> ForkedTradeBill:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Reader:
    """One forked child reading the bill, or a part of it, and what it wrote."""

    def __init__(
        self, content: bytes, part: tuple[list[str], int, int] | None, first: bool
    ) -> None:
        self._offset = 0
        self._times = _Times()
        self._pending: tuple[bytes, bytes] | None = None
        self._data = tempfile.TemporaryFile(prefix="trade-bill-")
        self._notes, notes_out = os.pipe()
        try:
            self._child = multiprocessing.get_context("fork").Process(
                target=_read_aside,
                args=(content, part, first, self._data.fileno(), notes_out),
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

    def unsplit(self) -> bool:
        """Whether this second part's reader found the bill cannot be cut where
        it was asked to start (its first word, looked at without losing it)."""
        self._pending = self._next()
        return self._pending[0] == _UNSPLIT

    def batches(self) -> Generator[list[tuple[Any, ...]], None, TradeTally]:
        """The child's batches; at the end, what its part added up to (for a
        whole bill, already checked against its summary)."""
        while True:
            if self._pending is not None:
                (kind, payload), self._pending = self._pending, None
            else:
                kind, payload = self._next()
            if kind == _ENTRIES:
                columns = [
                    column if type(column) is tuple else (column[0],) * column[1]
                    for column in marshal.loads(payload)
                ]
                columns[1] = tuple(map(self._times.__getitem__, columns[1]))
                yield columns
            elif kind == _END:
                tally: TradeTally = pickle.loads(payload)
                return tally
            elif kind == _REFUSED:
                text, line = pickle.loads(payload)
                error = BillFormatError(text)
                error.line = line
                raise error
            else:
                failure, trace = pickle.loads(payload)
                logger.error(
                    "bill_reader_failed",
                    extra={"error": failure, "traceback": trace},
                )
                raise ReaderFailed(f"the bill reader failed: {failure}")

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
        if self._data.closed:
            return
        if self._child.is_alive():
            self._child.terminate()
        self._child.join()
        self._child.close()
        os.close(self._notes)
        self._data.close()


class _Times(dict[float, dt.datetime]):
    """A bill time from its Unix seconds, each second made once: a bill's times
    are those ``read_trade_bill`` gives, China Standard Time (UTC+8)."""

    def __missing__(self, seconds: float) -> dt.datetime:
        self[seconds] = value = dt.datetime.fromtimestamp(seconds, _CHINA)
        return value


_CHINA = dt.timezone(dt.timedelta(hours=8))


def _read_aside(
    content: bytes,
    part: tuple[list[str], int, int] | None,
    first: bool,
    data: int,
    notes: int,
) -> None:
    """The child: every entry of the bill (``part`` None) or of its ``first`` or
    second part, then the end with the part's tally; or the bill's refusal."""
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
    # The parent's handlers (a WSGI server's, a CLI's) are not the child's:
    # ``close`` stops it with SIGTERM, and a Ctrl-C is for the parent to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(columns: list[tuple[Any, ...]]) -> None:
        # By column, the times as Unix seconds: ``marshal`` takes nothing else
        # of an entry, and is several times faster than pickling the tuples.
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
        tally = TradeTally()
        if part is not None and not first:
            part = second_part(content, part)
            if part is None:
                put(_UNSPLIT, b"")
                return
        entries = (
            read_trade_bill(content)
            if part is None
            else read_trade_bill_part(content, part, first, tally)
        )
        for columns in _columns_of(entries):
            send(columns)
        put(_END, pickle.dumps(tally))
    except BillFormatError as error:
        put(_REFUSED, pickle.dumps((str(error), error.line)))
    except Exception as error:  # noqa: BLE001 - anything else: the parent logs it
        # No logging here (see the module's text): the traceback goes to the
        # parent, which logs it and fails the run.
        put(_CRASHED, pickle.dumps((repr(error), traceback.format_exc())))
