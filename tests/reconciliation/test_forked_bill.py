"""A WeChat bill read by a forked child gives exactly what ``read_trade_bill`` gives
here: the same entries in the same order, the same refusal, and a clear error when
the child itself fails."""

from __future__ import annotations

import os

import pytest

from reconciliation.bills import forked
from reconciliation.bills.forked import ForkedTradeBill, ReaderFailed
from reconciliation.bills.wechat import BillFormatError, read_trade_bill, second_part
from reconciliation.lines import wechat_bill_lines, wechat_column_lines
from reconciliation.matching import DayMatch, day_order_type
from tests.reconciliation.test_wechat_bill import (
    HEADER,
    PAID,
    REFUND,
    REVOKED,
    SUMMARY,
    SUMMARY_HEADER,
    bill,
)

pytestmark = pytest.mark.skipif(not forked.available(), reason="no fork here")


def _forked(content: bytes) -> list:
    with ForkedTradeBill(content) as entries:
        return list(entries)


def test_the_child_gives_every_entry_read_here_in_batches(monkeypatch) -> None:
    monkeypatch.setattr(forked, "BATCH", 2)
    rows = [PAID.replace("`T1,", f"`T{n},") for n in range(7)]
    # A row with tabs goes the parser's general way, the others its fast way.
    rows[3] = ",".join(cell + "\t" for cell in rows[3].split(","))
    seven = "`7,`87.50,`0.00,`0.00,`0.56000,`87.50,`0.00"
    content = bill(HEADER, *rows, SUMMARY_HEADER, seven)

    entries = _forked(content)

    assert entries == list(read_trade_bill(content))
    assert [entry[3] for entry in entries] == [f"T{n}" for n in range(7)]
    assert entries[0][1].utcoffset() == list(read_trade_bill(content))[0][1].utcoffset()


def test_refunds_and_reversals_come_as_they_do_here() -> None:
    content = bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY)

    assert _forked(content) == list(read_trade_bill(content))


@pytest.mark.parametrize(
    "content",
    [
        bill(HEADER, PAID, REFUND),
        bill(HEADER, PAID.replace("`12.50", "`12.505", 1), SUMMARY_HEADER, SUMMARY),
        bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER,
             SUMMARY.replace("`0.06000", "`0.07000")),
        HEADER.encode() + b"\r\n" + PAID.encode("gbk"),
    ],
    ids=["truncated", "part-fen", "summary-mismatch", "not-utf8"],
)  # fmt: skip
def test_a_bill_refused_there_is_refused_here_with_the_same_words_and_line(
    content: bytes,
) -> None:
    with pytest.raises(BillFormatError) as here:
        list(read_trade_bill(content))

    with pytest.raises(BillFormatError) as there:
        _forked(content)

    assert (str(there.value), there.value.line) == (str(here.value), here.value.line)


def _dies(content: bytes):  # type: ignore[no-untyped-def]
    yield from read_trade_bill(content)
    os._exit(3)


def _breaks(content: bytes):  # type: ignore[no-untyped-def]
    raise MemoryError("no room")
    yield


def test_a_child_that_dies_is_an_error_not_a_short_bill(monkeypatch) -> None:
    monkeypatch.setattr(forked, "split_point", lambda content: None)
    monkeypatch.setattr(forked, "read_trade_bill", _dies)
    content = bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY)

    with pytest.raises(ReaderFailed, match="exit code 3"):
        _forked(content)


def test_a_child_that_fails_other_than_on_the_bill_says_how(
    monkeypatch, caplog
) -> None:
    monkeypatch.setattr(forked, "split_point", lambda content: None)
    monkeypatch.setattr(forked, "read_trade_bill", _breaks)

    with pytest.raises(ReaderFailed, match="no room"):
        _forked(bill(HEADER, PAID, SUMMARY_HEADER, SUMMARY))

    [logged] = [r for r in caplog.records if r.getMessage() == "bill_reader_failed"]
    assert "MemoryError: no room" in logged.traceback


def test_closing_early_stops_the_child_and_frees_what_it_wrote() -> None:
    rows = [PAID.replace("`T1,", f"`T{n},") for n in range(3)]
    content = bill(HEADER, *rows, SUMMARY_HEADER, SUMMARY)
    reading = ForkedTradeBill(content)
    children = [(r._child.pid, r._notes) for r in reading._readers]

    reading.close()

    assert len(children) == 2  # the bill splits in two
    for pid, notes in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped
        with pytest.raises(OSError):
            os.fstat(notes)


def _row(number: str, yuan: str = "12.50") -> str:
    return PAID.replace("`T1,", f"`{number},").replace("`12.50", f"`{yuan}")


def test_lines_taken_a_batch_at_a_time_sort_as_lines_taken_one_by_one() -> None:
    # T1 comes twice: first at an amount we did not take, then at ours. One by
    # one, the first finds the order and the second finds none; a batch taken
    # out of order would match the second instead.
    rows = [_row("T0"), _row("T1", "13.00"), _row("T1"), _row("T2"), REFUND]
    rows += [_row("T3"), _row("T4"), _row("T5")]
    summary = "`8,`88.00,`2.50,`0.00,`0.54000,`88.00,`2.50"
    content = bill(HEADER, *rows, SUMMARY_HEADER, summary)
    entries = list(read_trade_bill(content))
    batches = [list(zip(*entries[i : i + 3], strict=True)) for i in range(0, 8, 3)]

    paid = day_order_type("pos_payment", "wechat")

    def day() -> DayMatch:
        orders = {
            f"T{n}": paid(f"T{n}", 1250, "4200000001202603011234567890", "C1W01")
            for n in range(6)
        }  # fmt: skip
        return DayMatch(orders, {}, 60)

    one_by_one, batched = day(), day()
    for line in wechat_bill_lines(content, one_by_one.take_paid):
        if type(line) is not int:
            one_by_one.add(line)
    for line in wechat_column_lines(batches, batched.take_paid, batched.take_paid_all):
        if type(line) is not int:
            batched.add(line)

    def outcome(match: DayMatch):  # type: ignore[no-untyped-def]
        found = match.finish(lambda number: None, lambda number: None)
        kinds = sorted((f.key, f.kind.value) for f in found)
        return kinds, match.lines, match.matched, match.fee_fen, match.merchant_fees

    assert outcome(batched) == outcome(one_by_one)
    assert ("T1", "amount_mismatch") in outcome(one_by_one)[0]
    assert outcome(one_by_one)[2] == 5  # T0, T2, T3, T4, T5


def _many(end: str, rows: int = 40) -> tuple[str, list[str]]:
    lines = [PAID.replace("`T1,", f"`T{n},") for n in range(rows)]
    lines[7] = ""  # a blank line among the rows
    lines[9] = ",".join(cell + "\t" for cell in lines[9].split(","))
    total = f"`{rows - 1},`{12.5 * (rows - 1):.2f},`0.00,`0.00,`{0.08 * (rows - 1):.5f}"
    summary = f"{total},`{12.5 * (rows - 1):.2f},`0.00"
    return end, [HEADER, *lines, "", SUMMARY_HEADER, summary]


@pytest.mark.parametrize("end", ["\r\n", "\n", "\r"])
def test_a_bill_read_in_two_halves_gives_what_it_gives_read_whole(end: str) -> None:
    end, lines = _many(end)
    content = ("\ufeff" + end.join(lines) + end).encode()

    entries = _forked(content)

    assert entries == list(read_trade_bill(content))
    assert [entry[0] for entry in entries] == [n for n in range(2, 42) if n != 9]


def _refusal(content: bytes):  # type: ignore[no-untyped-def]
    try:
        list(read_trade_bill(content))
    except BillFormatError as refused:
        return str(refused), refused.line
    return None


@pytest.mark.parametrize(
    "spoil",
    [
        lambda lines: lines.__setitem__(35, lines[35].replace("`12.50", "`12.505", 1)),
        lambda lines: lines.__setitem__(5, lines[5].replace("`12.50", "`x", 1)),
        lambda lines: lines.__setitem__(-1, lines[-1].replace("`39,", "`38,")),
        lambda lines: lines.__setitem__(-1, lines[-1].replace("`3.12000", "`3.13000")),
        lambda lines: lines.__delitem__(slice(-2, None)),
        lambda lines: lines.__setitem__(30, lines[30].rsplit(",", 3)[0]),
        lambda lines: lines.append(PAID),
    ],
    ids=["part-fen-second", "bad-amount-first", "count", "fees", "no-summary",
         "cut-short-second", "after-summary"],
)  # fmt: skip
def test_a_bill_read_in_two_halves_is_refused_as_read_whole(spoil) -> None:  # type: ignore[no-untyped-def]
    end, lines = _many("\r\n")
    spoil(lines)
    content = (end.join(lines) + end).encode()
    expected = _refusal(content)
    assert expected is not None
    assert forked.split_point(content) is not None

    with pytest.raises(BillFormatError) as there:
        _forked(content)

    assert (str(there.value), there.value.line) == expected


def test_a_bill_the_second_reader_cannot_cut_is_read_whole_all_the_same() -> None:
    end, lines = _many("\r\n")
    # The summary's words in a product's name before the middle: a summary may
    # lie before the cut, so the bill is not read in two.
    lines[3] = lines[3].replace("午餐 lunch", "总交易单数 lunch")
    content = (end.join(lines) + end).encode()
    part = forked.split_point(content)
    assert part is not None and second_part(content, part) is None

    assert _forked(content) == list(read_trade_bill(content))


def test_a_child_stops_when_told_though_its_parent_handles_sigterm() -> None:
    import signal

    # A WSGI server's worker catches SIGTERM to finish its requests; the reader
    # it forks must still stop at once when told to, not read on to the end.
    previous = signal.signal(signal.SIGTERM, lambda number, frame: None)
    end, lines = _many("\r\n", rows=200_000)
    content = (end.join(lines) + end).encode()
    try:
        with ForkedTradeBill(content) as reading:
            second = reading._readers[1]
            assert not second.unsplit()  # it has begun: its first batch is in
            second._child.terminate()
            second._child.join()
            exitcode = second._child.exitcode
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert exitcode == -signal.SIGTERM
