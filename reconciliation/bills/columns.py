"""A WeChat Pay trade bill in WeChat Pay's own layout, read into Arrow columns.

WeChat Pay writes every trade bill the same way: a header line, one line per row
whose every field is a back-quote and its value (no field holding a comma), then
the summary. A night's bill of a million such lines is read here by Arrow's CSV
reader, in C++ threads that do not hold the interpreter lock, and checked a
column at a time. Each distinct text of a checked column (amounts, times,
states: a day repeats a few thousand) goes through the very functions the line
reader (``wechat.read_trade_bill``) uses, so the values are exactly the ones it
gives; tests hold the two to each other.

Anything else makes ``read_trade_columns`` answer None, and the line reader reads
the bill and says what is wrong with it, if anything: spaces around a value, an
amount it would refuse, a blank line, a row of another width, a byte that is not
UTF-8, a column missing from the header, a summary that is not where WeChat Pay
puts it. Only a bill whose rows do not add up to its summary is refused here
(``BillFormatError``), with the words the line reader would use.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import operator
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from reconciliation.bills.wechat import (
    _ENTRY_COLUMNS,
    _NOT_WHOLE,
    _REQUIRED,
    _SUMMARY_NAME,
    BillFormatError,
    WechatBillSummary,
    _check_sums,
    _fen_of,
    _Scan,
    _time,
)

# Arrow's default allocator (mimalloc) keeps the pages a column frees for the
# next one: a night's run of a million lines, its bill (a quarter of a GiB) held
# throughout, went over 1 GiB at its peak, and was slower, for pages never asked
# for again. jemalloc gives them back. Set for the process (Arrow is the nightly
# run's alone here); where jemalloc is not built in, the default stays.
try:
    pa.set_memory_pool(pa.jemalloc_memory_pool())
except NotImplementedError:  # pragma: no cover - depends on the Arrow build
    pass

PARTS = 2
"""Threads reading a big bill's rows, each its own run of lines: the nightly run
reads our orders meanwhile, and once they are in, the second core would
otherwise wait for the one reading the bill."""
PART_BYTES = 4 << 20
"""No part smaller than this: a small bill is read by one thread."""

_BOM = b"\xef\xbb\xbf"
_TIME, _TRANSACTION, _ORDER_NO, _STATE, _SETTLED = _ENTRY_COLUMNS[:5]
_REFUND_ID, _REFUND_NO, _REFUNDED, _REFUND_STATE, _FEE, _ORDER = _ENTRY_COLUMNS[5:]
_AMOUNTS = (_SETTLED, _REFUNDED, _FEE, _ORDER)
_TEXTS = (_STATE, _REFUND_ID, _REFUND_NO, _REFUND_STATE)
_IDS = (_TRANSACTION, _ORDER_NO)
# An id as the line reader takes it without a second look: printable ASCII, no
# space. Any other (Unicode, spaces) is left to it.
_ID = r"^`[!-~]+$"


@dataclasses.dataclass(frozen=True)
class TradeColumns:
    """The detail rows of a bill, by column; row ``i`` is line ``first_line + i``.

    ``rows`` has the line reader's ``TradeEntry`` fields but the first two: ids
    and texts as strings without their back-quote, amounts as int64 fen, and
    ``traded_at`` as it stands in the bill (back-quote and all), which ``times``
    turns into the time the line reader gives."""

    rows: pa.Table
    first_line: int
    times: dict[str, dt.datetime]
    """Each ``traded_at`` text as the time it stands for."""


def read_trade_columns(content: bytes) -> TradeColumns | None:
    """The bill's detail rows as columns; None for a bill not in WeChat Pay's
    layout (read it with ``read_trade_bill``). Raises ``BillFormatError`` for
    rows that do not add up to the summary."""
    if not _utf8(content):
        return None
    try:
        scan = _Scan(content)
    except BillFormatError:
        return None
    headers = scan.headers
    if scan.header_line != 1 or any(name not in headers for name in _ENTRY_COLUMNS):
        return None
    start = 3 if content.startswith(_BOM) else 0
    body = _after_line(content, start)
    summary_at = max(
        content.rfind(b"\n" + _SUMMARY_NAME), content.rfind(b"\r" + _SUMMARY_NAME)
    )
    if body is None or summary_at < body:
        return None
    summary_at += 1
    # Summary words among the rows (a summary line with a space or a back-quote
    # before them, or in a column Arrow does not keep) are the line reader's to
    # judge: it may take that line for the summary.
    if content.find(_SUMMARY_NAME, body, summary_at) >= 0:
        return None
    parts = _parts(content, body, summary_at)
    try:
        with ThreadPoolExecutor(len(parts) - 1 or 1, "bill-part") as pool:
            later = [pool.submit(_read, part, headers) for part in parts[1:]]
            # The first part here; every part waited for, whatever happens.
            columns = _read(parts[0], headers)
            for part in later:
                columns.extend(part.result())
    except (pa.ArrowInvalid, _NotInLayout):
        return None
    try:
        rows = columns.table()
    except (pa.ArrowInvalid, _NotInLayout):
        return None
    times, totals = columns.times, columns.totals
    # Each row read is one line: the header is line 1, the rows follow it.
    summary = _summary(content, headers, summary_at, 2 + rows.num_rows)
    if summary is None:
        return None
    _check_sums(
        rows.num_rows,
        totals["settled_fen"],
        totals["refund_fen"],
        totals["fee_fen"],
        summary,
    )
    return TradeColumns(rows, 2, times)


class _NotInLayout(Exception):
    """A value the line reader must look at itself."""


def _utf8(content: bytes) -> bool:
    """Whether the whole file is UTF-8, checked by Arrow without decoding it into
    a string (the CSV reader checks only the columns it keeps)."""
    offsets = pa.array([0, len(content)], pa.int64()).buffers()[1]
    whole = pa.Array.from_buffers(
        pa.large_binary(), 1, [None, offsets, pa.py_buffer(content)]
    )
    try:
        whole.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _after_line(content: bytes, start: int) -> int | None:
    """Where the line beginning at ``start`` ends (after its CR, LF or CRLF)."""
    ends = [
        at for at in (content.find(b"\n", start), content.find(b"\r", start)) if at >= 0
    ]
    if not ends:
        return None
    end = min(ends)
    return end + 2 if content[end : end + 2] == b"\r\n" else end + 1


def _summary(
    content: bytes, headers: list[str], at: int, number: int
) -> WechatBillSummary | None:
    """The summary whose header line begins at ``at``, read by the line reader's
    own scan, which also refuses text after it; None if it does not read."""
    scan = _Scan(content, (headers, at, number))
    try:
        for line, raw in scan.rows():
            if scan.cells(line, raw) is not None:
                return None
    except BillFormatError:
        return None
    return scan.summary


def _parts(content: bytes, start: int, end: int) -> list[memoryview]:
    """The rows, from ``start`` to ``end``, in ``PARTS`` runs of whole lines for
    as many threads to read (one run for a small bill, or where no line feed
    follows a cut)."""
    whole = memoryview(content)
    if end - start < PARTS * PART_BYTES:
        return [whole[start:end]]
    cuts = [start]
    for number in range(1, PARTS):
        at = content.find(b"\n", start + (end - start) * number // PARTS, end) + 1
        if at <= 0 or at >= end:
            break
        if at > cuts[-1]:  # a line longer than a part: no empty part
            cuts.append(at)
    cuts.append(end)
    return [whole[first:last] for first, last in itertools.pairwise(cuts)]


def _read(rows: memoryview, headers: list[str]) -> _Columns:
    columns = _Columns()
    for batch in _batches(rows, headers):
        columns.add(batch)
    return columns


def _batches(body: memoryview, headers: list[str]) -> Iterator[pa.RecordBatch]:
    """The rows, a block of the file at a time, with the columns kept named by
    their headers. One block at a time rather than the whole at once: the raw
    columns of a million rows would cost half a GiB on top of what is kept. In
    the calling thread alone: the parts are what is read in parallel."""
    names = [str(index) for index in range(len(headers))]
    keep = {str(headers.index(name)): name for name in _ENTRY_COLUMNS}
    reader = pcsv.open_csv(
        pa.BufferReader(pa.py_buffer(body)),
        read_options=pcsv.ReadOptions(
            column_names=names, block_size=2 << 20, use_threads=False
        ),
        parse_options=pcsv.ParseOptions(
            quote_char=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
        ),
        convert_options=pcsv.ConvertOptions(
            include_columns=list(keep),
            column_types={name: pa.string() for name in keep},
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    renamed = [keep[name] for name in reader.schema.names]
    for batch in reader:
        yield batch.rename_columns(renamed)


_FIELDS = (
    (_TIME, "traded_at"),
    (_TRANSACTION, "transaction_id"),
    (_ORDER_NO, "out_trade_no"),
    (_STATE, "trade_state"),
    (_SETTLED, "settled_fen"),
    (_REFUND_ID, "refund_id"),
    (_REFUND_NO, "out_refund_no"),
    (_REFUNDED, "refund_fen"),
    (_REFUND_STATE, "refund_state"),
    (_FEE, "fee_fen"),
    (_ORDER, "order_fen"),
)


class _Columns:
    """The rows a block at a time, checked and converted as the line reader
    would take them (or ``_NotInLayout``): each distinct time, amount and text
    is looked at once, by the line reader's own functions. Ids and texts lose
    their back-quote block by block, so that each block's raw cells are let go
    before the next is read (and their memory serves it); times keep theirs, and
    amounts are converted at the end, from their distinct values."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[pa.Array]] = {name: [] for name, _ in _FIELDS}
        self._distinct: dict[str, set[str]] = {name: set() for name in _CHECKED}
        self.times: dict[str, dt.datetime] = {}
        """Each time's text, back-quote and all, as the time it stands for."""
        self.totals: dict[str, int] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        for name, chunks in self._chunks.items():
            cells = batch[name]
            if name in _IDS:
                if not pc.all(pc.match_substring_regex(cells, _ID)).as_py():
                    raise _NotInLayout
            elif name in _CHECKED:
                self._distinct[name].update(pc.unique(cells).to_pylist())
            if name in _IDS or name in _TEXTS:
                cells = pc.utf8_slice_codeunits(cells, 1)
            chunks.append(cells)

    def extend(self, later: _Columns) -> None:
        """Follow these rows with ``later``'s."""
        for name, chunks in self._chunks.items():
            chunks.extend(later._chunks[name])
        for name, distinct in self._distinct.items():
            distinct.update(later._distinct[name])

    def table(self) -> pa.Table:
        self.times = {text: _time_of(text) for text in self._distinct.pop(_TIME)}
        for name, distinct in self._distinct.items():
            required = name in _REQUIRED
            for text in distinct:
                _text_of(text, required=required)
        columns = {}
        for name, field in _FIELDS:
            cells = pa.chunked_array(self._chunks.pop(name), pa.string())
            if name in _AMOUNTS:
                columns[field], self.totals[field] = _amounts(cells)
            else:
                columns[field] = cells
        return pa.table(columns)


_CHECKED = (_TIME, *_TEXTS)


def _amounts(cells: pa.ChunkedArray) -> tuple[pa.ChunkedArray, int]:
    """An amount column as fen, and its total (exact: from each distinct amount
    and how often it comes, in Python integers)."""
    counted = pc.value_counts(cells)
    texts = counted.field("values")
    fen = [_amount_of(text) for text in texts.to_pylist()]
    total = sum(map(operator.mul, fen, counted.field("counts").to_pylist()))
    return pc.take(
        pa.array(fen, pa.int64()), pc.index_in(cells, value_set=texts)
    ), total


def _time_of(text: str) -> dt.datetime:
    value = text[1:]
    if not text.startswith("`") or value.strip() != value:
        raise _NotInLayout
    try:
        return _time(value, 0)
    except BillFormatError:
        raise _NotInLayout from None


def _amount_of(text: str) -> int:
    # A required amount left empty is the line reader's to judge: its row may be
    # one cut short.
    value = text[1:]
    if not text.startswith("`") or not value or value.strip() != value:
        raise _NotInLayout
    fen = _fen_of(value)
    if fen is None or fen == _NOT_WHOLE or abs(fen) >= 2**63:
        raise _NotInLayout
    return fen


def _text_of(text: str, *, required: bool) -> str:
    # A required text left empty is the line reader's to judge, as an amount.
    value = text[1:]
    if not text.startswith("`") or value.strip() != value or required and not value:
        raise _NotInLayout
    return value
