"""A WeChat bill read into columns gives exactly what the line reader gives, or
leaves the bill to it; matched by column, a day ends exactly as it ends matched
line by line: the same findings in the same order, counts, fees and merchant
fees."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.orders import OrderRecord, RefundRecord
from reconciliation.bills import columns as columns_module
from reconciliation.bills.columns import TradeColumns, read_trade_columns
from reconciliation.bills.wechat import BillFormatError, read_trade_bill
from reconciliation.lines import wechat_bill_lines
from reconciliation.matching import DayMatch, DayOrderColumns
from tests.reconciliation.test_wechat_bill import (
    HEADER,
    PAID,
    REFUND,
    REVOKED,
    SUMMARY,
    SUMMARY_HEADER,
    bill,
)


def _entries(columns: TradeColumns) -> list[tuple]:
    rows = columns.rows.to_pylist()
    return [
        (
            columns.first_line + index,
            columns.times[row["traded_at"]],
            row["transaction_id"],
            row["out_trade_no"],
            row["trade_state"],
            row["settled_fen"],
            row["refund_id"],
            row["out_refund_no"],
            row["refund_fen"],
            row["refund_state"],
            row["fee_fen"],
            row["order_fen"],
        )
        for index, row in enumerate(rows)
    ]


def _line_reader(content: bytes) -> tuple:
    try:
        return ("read", list(read_trade_bill(content)))
    except BillFormatError as refused:
        return ("refused", str(refused), refused.line)


def _by_column(content: bytes) -> tuple | None:
    """What reading ``content`` by column gives; the same, every test checks,
    whether its rows are read whole or cut into parts read in parallel (however
    small)."""
    whole = _read_by_column(content)
    for parts in (2, 3):
        assert _read_by_column(content, parts=parts) == whole
    return whole


def _read_by_column(content: bytes, parts: int = 1) -> tuple | None:
    saved = columns_module.PARTS, columns_module.PART_BYTES
    columns_module.PARTS, columns_module.PART_BYTES = parts, 1
    try:
        columns = read_trade_columns(content)
    except BillFormatError as refused:
        return ("refused", str(refused), refused.line)
    finally:
        columns_module.PARTS, columns_module.PART_BYTES = saved
    return None if columns is None else ("read", _entries(columns))


@pytest.mark.parametrize("end", ["\r\n", "\n", "\r"])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_a_bill_in_wechat_pays_layout_reads_as_the_line_reader_reads_it(
    end: str, bom: str
) -> None:
    content = (bom + end.join([HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY])
               + end).encode()  # fmt: skip

    read = _by_column(content)

    assert read is not None
    assert read == _line_reader(content)
    assert [entry[0] for entry in read[1]] == [2, 3, 4]
    assert read[1][0][1].utcoffset() == _line_reader(content)[1][0][1].utcoffset()


def test_columns_in_another_order_and_unknown_ones_read_the_same() -> None:
    def shuffled(line: str) -> str:
        cells = line.split(",")
        return ",".join([cells[-1], *reversed(cells[:-1]), "`extra"])

    header = shuffled(HEADER).replace("`extra", "新的列")
    content = bill(header, *(shuffled(row) for row in (PAID, REFUND, REVOKED)),
                   SUMMARY_HEADER, SUMMARY)  # fmt: skip

    read = _by_column(content)

    assert read is not None and read == _line_reader(content)


def test_rows_that_do_not_add_up_to_the_summary_are_refused_in_the_same_words() -> None:
    content = bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER,
                   SUMMARY.replace("`0.06000", "`0.07000"))  # fmt: skip

    refused = _by_column(content)

    assert refused is not None and refused[0] == "refused"
    assert refused == _line_reader(content)


def _spoiled(change) -> bytes:  # type: ignore[no-untyped-def]
    lines = [HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY]
    change(lines)
    return bill(*lines)


def _header(name: str, written: str):  # type: ignore[no-untyped-def]
    def change(lines: list[str]) -> None:
        lines[0] = lines[0].replace(name, written)

    return change


def _moved(column: int, then):  # type: ignore[no-untyped-def]
    """Every line's ``column`` moved to the end (the summary's lines kept), then
    ``then``."""

    def change(lines: list[str]) -> None:
        for index in range(len(lines) - 2):
            cells = lines[index].split(",")
            cells.append(cells.pop(column))
            lines[index] = ",".join(cells)
        then(lines)

    return change


def _cell(row: int, column: int, value: str):  # type: ignore[no-untyped-def]
    def change(lines: list[str]) -> None:
        cells = lines[row].split(",")
        cells[column] = value
        lines[row] = ",".join(cells)

    return change


@pytest.mark.parametrize(
    "change",
    [
        _cell(1, 6, "` T1"),
        _cell(1, 6, "`T1\u3000"),
        _cell(1, 6, "`订单1"),
        _cell(1, 6, "T1"),
        _cell(1, 5, "`"),
        _cell(1, 9, "`SUCCESS "),
        _cell(1, 12, "`12.5"),
        _cell(1, 12, "`12"),
        _cell(1, 12, "`12.50\u00a0"),
        _cell(1, 12, "`1e3"),
        _cell(1, 12, "`１２.50"),
        _cell(1, 24, "`"),
        _cell(1, 22, "`0.0800"),
        _cell(1, 22, "`0.08001"),
        _cell(1, 0, "`2026-03-01 24:00:01"),
        _cell(1, 0, "`2026-3-01 12:00:01"),
        _cell(1, 20, "`午餐, lunch"),
        _cell(1, 20, "`\udcff".encode("utf-8", "surrogateescape").decode("latin-1")),
        lambda lines: lines.insert(2, ""),
        lambda lines: lines.insert(0, ""),
        lambda lines: lines.__setitem__(1, lines[1].rsplit(",", 1)[0]),
        lambda lines: lines.__setitem__(3, lines[3] + ","),
        lambda lines: lines.__delitem__(slice(-2, None)),
        lambda lines: lines.append(PAID),
        lambda lines: lines.__setitem__(-1, lines[-1] + "\r\n"),
        # Text cells after an empty one of the same column (the payment line's
        # empty refund fields come first): each is looked at all the same.
        _cell(2, 19, "`SUCCESS "),
        _cell(2, 19, "SUCCESS"),
        _cell(2, 15, "R1"),
        _cell(2, 14, "`50000001\u3000"),
        # A required text left empty at the end of its row is a row cut short.
        _moved(9, _cell(1, 26, "`")),
        # Summary words where Arrow keeps no column: a summary line to the line
        # reader, a row to Arrow.
        _moved(0, _cell(2, 0, "`总交易单数")),
        _moved(0, _cell(2, 0, "总交易单数")),
        _header("微信退款单号", "退款单号"),
        _header("应结订单金额", "应结订单金额(元)"),
        lambda lines: lines.__setitem__(-2, "`" + lines[-2]),
    ],
)
def test_a_bill_not_in_wechat_pays_layout_is_left_to_the_line_reader(change) -> None:  # type: ignore[no-untyped-def]
    content = _spoiled(change)

    read = _by_column(content)

    assert read is None or read == _line_reader(content)


_SPOILS = [
    lambda cell: " " + cell,
    lambda cell: cell + " ",
    lambda cell: cell + "\t",
    lambda cell: cell + "\u3000",
    lambda cell: cell.removeprefix("`"),
    lambda cell: "`",
    lambda cell: "",
    lambda cell: cell[:-1],
    lambda cell: cell + "0",
    lambda cell: "`总交易单数",
]


@settings(max_examples=400, deadline=None)
@given(
    spoils=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 26),
            st.integers(0, len(_SPOILS) - 1),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_whatever_is_spoiled_the_columns_read_as_the_lines_or_not_at_all(spoils):  # type: ignore[no-untyped-def]
    lines = [HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY]
    for row, column, spoil in spoils:
        cells = lines[row].split(",")
        cells[column] = _SPOILS[spoil](cells[column])
        lines[row] = ",".join(cells)
    content = bill(*lines)

    read = _by_column(content)

    assert read is None or read == _line_reader(content)


def test_a_byte_not_utf8_in_a_column_not_read_leaves_the_bill_to_the_line_reader():
    content = bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY)
    content = content.replace("午餐".encode(), b"\xff\xfe", 1)

    assert _by_column(content) is None
    assert _line_reader(content)[0] == "refused"


# -- matching by column against matching line by line ---------------------------

_NUMBERS = [f"T{n}" for n in range(6)]
_TRANSACTIONS = ["4200000001", "4200000002"]


@dataclasses.dataclass(frozen=True)
class _Row:
    number: str
    state: str
    amount_fen: int
    transaction: str
    fee_fen: int
    refund: str
    refund_state: str
    order_only: bool
    """Whether the order's amount is left out (应结订单金额 only)."""


def _yuan(fen: int, places: int = 2) -> str:
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole}.{part:02d}" + "0" * (places - 2)


def _bill_of(rows: list[_Row], end: str) -> bytes:
    lines = [HEADER]
    settled = refunded = fees = 0
    for second, row in enumerate(rows):
        refund = row.state == "REFUND"
        paid = 0 if refund else row.amount_fen
        back = row.amount_fen if refund else 0
        fee = -abs(row.fee_fen) if refund else row.fee_fen
        settled, refunded, fees = settled + paid, refunded + back, fees + fee
        cells = [
            f"2026-03-01 12:{second // 60:02d}:{second % 60:02d}", "wx1", "1900000109",
            "0", "", row.transaction, row.number, "oA", "MICROPAY", row.state,
            "OTHERS", "CNY", _yuan(paid), "0.00",
            "50000001" if refund else "0", row.refund if refund else "0",
            _yuan(back), "0.00", "ORIGINAL" if refund else "",
            row.refund_state if refund else "", "午餐 lunch", "", _yuan(fee, 5),
            "0.60%", "0.00" if row.order_only else _yuan(paid), _yuan(back), "",
        ]  # fmt: skip
        lines.append(",".join("`" + cell for cell in cells))
    lines.append(SUMMARY_HEADER)
    lines.append(
        ",".join(
            "`" + cell
            for cell in (
                str(len(rows)),
                _yuan(settled),
                _yuan(refunded),
                "0.00",
                _yuan(fees, 5),
                _yuan(settled),
                _yuan(refunded),
            )
        )  # fmt: skip
    )
    return (end.join(lines) + end).encode()


_rows = st.builds(
    _Row,
    number=st.sampled_from(_NUMBERS),
    state=st.sampled_from(["SUCCESS", "SUCCESS", "SUCCESS", "REVOKED", "REFUND"]),
    amount_fen=st.sampled_from([1250, 1300, 300]),
    transaction=st.sampled_from(_TRANSACTIONS),
    fee_fen=st.sampled_from([8, 0, 2]),
    refund=st.sampled_from(["R1", "R2", "R3"]),
    refund_state=st.sampled_from(["SUCCESS", "PROCESSING", "FAIL", ""]),
    order_only=st.booleans(),
)
_orders = st.dictionaries(
    st.sampled_from(_NUMBERS),
    st.tuples(
        st.sampled_from(["top_up", "pos_payment"]),
        st.sampled_from([1250, 1300, 300]),
        st.sampled_from([*_TRANSACTIONS, None, ""]),
        st.sampled_from([None, "C1W01", ""]),
    ),
)
_before = st.dictionaries(
    st.sampled_from(_NUMBERS), st.sampled_from(["unpaid", "paid", "closed"])
)
_refunds = st.dictionaries(
    st.sampled_from(["R1", "R2", "R3"]),
    st.tuples(
        st.sampled_from(_NUMBERS),
        st.sampled_from([300, 1250]),
        st.sampled_from(["succeeded", "processing"]),
    ),  # fmt: skip
)


def _day(orders, before, refunds):  # type: ignore[no-untyped-def]
    """A day's orders as the run holds them: by column, but for those an earlier
    run of the day repaired (``before``), held by number as they stood."""
    columns = DayOrderColumns()
    for kind in ("top_up", "pos_payment"):
        rows = [
            (number, amount, transaction, merchant)
            for number, (of_kind, amount, transaction, merchant) in orders.items()
            if of_kind == kind
        ]
        columns.add(rows, kind, "wechat")
    paid = {}
    for number in columns.drop(before):
        kind, amount, _, merchant = orders[number]
        paid[number] = OrderRecord(kind, number, "wechat", before[number], amount,
                                   None, None, merchant)  # fmt: skip
    refunded = {
        refund: RefundRecord(
            "pos_refund", refund, number, "wechat", state, amount, None, None, "C1W01"
        )  # fmt: skip
        for refund, (number, amount, state) in refunds.items()
    }
    return DayMatch(paid, refunded, 60, columns)


def _finished(match: DayMatch) -> tuple:
    elsewhere = OrderRecord("top_up", "T5", "wechat", "unpaid", 1250, None, None)
    findings = match.finish(
        lambda number: elsewhere if number == "T5" else None, lambda number: None
    )
    return (
        findings,
        match.lines,
        match.matched,
        match.fee_fen,
        sorted(match.merchant_fees),
    )


def _matched(match: DayMatch, lines) -> tuple:  # type: ignore[no-untyped-def]
    for line in lines:
        if type(line) is not int:
            match.add(line)
    return _finished(match)


def _both_ways(content: bytes, orders, before=None, refunds=None):  # type: ignore[no-untyped-def]
    """The day matched line by line and by column: (each's end, the counts of
    lines taken by column)."""
    columns = read_trade_columns(content)
    assert columns is not None
    by_line = _day(orders, before or {}, refunds or {})
    line_by_line = _matched(by_line, wechat_bill_lines(content, by_line.take_paid))
    by_column = _day(orders, before or {}, refunds or {})
    lines = list(by_column.take_columns(columns))
    taken = [line for line in lines if type(line) is int]
    return line_by_line, _matched(by_column, lines), taken


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(_rows, min_size=1, max_size=14),
    orders=_orders,
    before=_before,
    refunds=_refunds,
    end=st.sampled_from(["\r\n", "\n"]),
)
def test_a_day_matched_by_column_ends_as_one_matched_line_by_line(
    rows, orders, before, refunds, end
) -> None:  # type: ignore[no-untyped-def]
    line_by_line, by_column, _ = _both_ways(
        _bill_of(rows, end), orders, before, refunds
    )

    assert by_column == line_by_line


def test_an_order_with_two_payment_lines_is_matched_line_by_line() -> None:
    # T1 first at an amount we did not take, then at ours: line by line the
    # first finds the order (amount mismatch), the second finds none.
    row = _Row("T1", "SUCCESS", 1300, _TRANSACTIONS[0], 8, "R1", "", False)
    rows = [row, dataclasses.replace(row, amount_fen=1250),
            dataclasses.replace(row, number="T2", amount_fen=1250)]  # fmt: skip
    orders = {"T1": ("pos_payment", 1250, _TRANSACTIONS[0], "C1W01"),
              "T2": ("pos_payment", 1250, _TRANSACTIONS[0], "C1W01")}  # fmt: skip
    expected, ended, _ = _both_ways(_bill_of(rows, "\r\n"), orders)

    assert ended == expected
    findings, lines, matched, _, merchant_fees = ended
    assert [(f.kind.value, f.key) for f in findings] == [
        ("amount_mismatch", "T1"),
        ("channel_only", "T1"),
    ]
    assert (lines, matched) == (3, 1)
    assert merchant_fees == [("T2", "C1W01", 8)]


def test_a_busy_day_is_taken_by_column_with_its_odd_lines_left_to_add() -> None:
    orders = {
        f"P{n:03d}": ("pos_payment" if n % 3 else "top_up", 1250 + n, f"42{n:08d}",
                      f"C1W0{n % 4}" if n % 3 else None)
        for n in range(60)
    }  # fmt: skip
    rows = [
        _Row(f"P{n:03d}", "SUCCESS", 1250 + n, f"42{n:08d}", 8, "R1", "", n % 2 == 0)
        for n in range(60)
        if n not in (7, 8)
    ]
    rows[8] = dataclasses.replace(rows[8], amount_fen=1, fee_fen=0)  # P010: 1 fen
    rows[18] = dataclasses.replace(rows[18], transaction="4299")  # P020: another trade
    rows.append(_Row("P100", "SUCCESS", 500, "4201", 3, "R1", "", False))
    rows.append(_Row("P011", "REFUND", 300, f"42{11:08d}", 2, "R9", "SUCCESS", False))
    expected, ended, taken = _both_ways(_bill_of(rows, "\r\n"), orders)

    assert ended == expected
    assert taken == [56]  # 58 lines of the day's orders, less P010 and P020
    findings, count, matched, _, merchant_fees = ended
    assert (count, matched) == (60, 56)
    assert sorted((f.kind.value, f.key) for f in findings) == [
        ("amount_mismatch", "P010"),
        ("channel_only", "P100"),
        ("ours_only", "P007"),
        ("ours_only", "P008"),
        ("refund_mismatch", "R9"),
        ("status_mismatch", "P020"),  # paid in another trade
    ]
    # The POS payments taken: not P007, P008, P010, P020, nor the top-ups.
    assert len(merchant_fees) == len([n for n in range(60) if n % 3]) - 4


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_a_big_bill_is_cut_into_parts_at_line_ends_only(
    parts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(columns_module, "PARTS", parts)
    monkeypatch.setattr(columns_module, "PART_BYTES", 1)
    rows = [PAID.replace("`T1,", f"`T{n},") for n in range(40)]
    content = bill(HEADER, *rows, SUMMARY_HEADER, SUMMARY)
    start = content.index(b"\n") + 1
    end = content.index(SUMMARY_HEADER.encode())

    cut = columns_module._parts(content, start, end)

    assert len(cut) == parts
    assert b"".join(bytes(part) for part in cut) == content[start:end]
    assert all(bytes(part).endswith(b"\r\n") for part in cut)
