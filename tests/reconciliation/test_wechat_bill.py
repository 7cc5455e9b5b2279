"""The WeChat Pay trade bill parser: by header name, exact fen, tolerant of the
format's quirks, and refusing what is cut short or does not add up."""

from __future__ import annotations

import datetime as dt

import pytest

from reconciliation.bills.wechat import (
    BillFormatError,
    fen,
    parse_trade_bill,
    read_trade_bill,
)
from reconciliation.lines import wechat_bill_lines, wechat_lines

HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,"
    "交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,"
    "商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
PAID = (
    "`2026-03-01 12:00:01,`wx1,`1900000109,`0,`,`4200000001202603011234567890,"
    "`T1,`oA,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`12.50,`0.00,`0,`0,`0.00,`0.00,`,`,"
    "`午餐 lunch,`,`0.08000,`0.60%,`12.50,`0.00,`"
)
REFUND = (
    "`2026-03-01 18:30:00,`wx1,`1900000109,`0,`,`4200000001202603011234567890,"
    "`T1,`oA,`MICROPAY,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50000001,`R1,`2.50,"
    "`0.00,`ORIGINAL,`SUCCESS,`午餐 lunch,`,`-0.02000,`0.60%,`0.00,`2.50,`"
)
REVOKED = (
    "`2026-03-01 19:00:00,`wx1,`1900000109,`0,`,`4200000002202603011234567890,"
    "`T2,`oB,`MICROPAY,`REVOKED,`OTHERS,`CNY,`3.00,`0.00,`0,`0,`0.00,`0.00,`,`,"
    "`饮料 drink,`,`0.00000,`0.60%,`3.00,`0.00,`"
)
SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,"
    "申请退款总金额"
)
SUMMARY = "`3,`15.50,`2.50,`0.00,`0.06000,`15.50,`2.50"


def bill(*lines: str, end: str = "\r\n") -> bytes:
    return (end.join(lines) + end).encode()


def test_rows_are_read_by_header_name_into_exact_fen() -> None:
    parsed = parse_trade_bill(
        bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY)
    )
    paid, refund, revoked = parsed.rows
    assert paid.out_trade_no == "T1" and paid.settled_fen == 1250 and paid.fee_fen == 8
    assert paid.traded_at == dt.datetime(
        2026, 3, 1, 12, 0, 1, tzinfo=paid.traded_at.tzinfo
    )
    assert paid.traded_at.utcoffset() == dt.timedelta(hours=8)
    assert refund.is_refund and refund.refund_fen == 250 and refund.fee_fen == -2
    assert refund.out_refund_no == "R1" and refund.refund_id == "50000001"
    assert revoked.trade_state == "REVOKED" and revoked.order_fen == 300
    assert parsed.summary.count == 3 and parsed.summary.settled_fen == 1550
    assert parsed.summary.fee_fen == 6


def test_columns_in_another_order_and_unknown_columns_are_fine() -> None:
    names = HEADER.split(",") + ["新列"]
    cells = PAID.split(",") + ["`x"]
    order = list(reversed(range(len(names))))
    header = ",".join(names[i] for i in order)
    row = ",".join(cells[i] for i in order)
    one = "`1,`12.50,`0.00,`0.00,`0.08000,`12.50,`0.00"
    [parsed] = parse_trade_bill(bill(header, row, SUMMARY_HEADER, one)).rows
    assert parsed.out_trade_no == "T1" and parsed.settled_fen == 1250
    assert parsed.extra == {
        "新列": "x",
        "特约商户号": "0",
        "设备号": "",
        "付款银行": "OTHERS",
        "费率备注": "",
    }


def test_quirks_are_tolerated_bom_tabs_full_width_units_lf() -> None:
    header = HEADER.replace("应结订单金额", "应结订单金额（元）").replace(
        "手续费", "手续费(元)", 1
    )
    row = ",".join(cell + "\t" for cell in PAID.split(","))
    one = "`1,`12.50,`0.00,`0.00,`0.08000,`12.50,`0.00\t,\t"
    content = "\ufeff" + "\n".join([header, row, SUMMARY_HEADER, one]) + "\n\n"
    [parsed] = parse_trade_bill(content.encode()).rows
    assert parsed.settled_fen == 1250 and parsed.fee_fen == 8
    assert parsed.description == "午餐 lunch"


def test_a_bill_without_its_summary_is_truncated() -> None:
    with pytest.raises(BillFormatError, match="truncated"):
        parse_trade_bill(bill(HEADER, PAID, REFUND))
    with pytest.raises(BillFormatError, match="truncated"):
        parse_trade_bill(bill(HEADER, PAID, SUMMARY_HEADER))


def test_a_row_cut_short_is_refused_with_its_line() -> None:
    short = ",".join(PAID.split(",")[:14])
    with pytest.raises(BillFormatError) as refused:
        parse_trade_bill(bill(HEADER, short, SUMMARY_HEADER, SUMMARY))
    assert refused.value.line == 2


def test_rows_that_do_not_add_up_to_the_summary_are_refused() -> None:
    with pytest.raises(BillFormatError, match="counts 3 rows"):
        parse_trade_bill(bill(HEADER, PAID, REFUND, SUMMARY_HEADER, SUMMARY))
    wrong = SUMMARY.replace("`15.50,`2.50,`0.00", "`15.51,`2.50,`0.00", 1)
    with pytest.raises(BillFormatError, match="settled_fen"):
        parse_trade_bill(bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, wrong))


def test_a_summary_count_in_other_digits_is_refused_as_not_a_count() -> None:
    # "3²" and "３" pass str.isdigit; int() refuses the first, takes the second.
    for count in ("`3\u00b2", "`\uff13"):
        summary = SUMMARY.replace("`3,", count + ",", 1)
        content = bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, summary)
        with pytest.raises(BillFormatError, match="not a count"):
            parse_trade_bill(content)
        with pytest.raises(BillFormatError, match="not a count"):
            list(read_trade_bill(content))


def test_something_that_is_not_a_trade_bill_is_refused() -> None:
    with pytest.raises(BillFormatError, match="not a WeChat Pay trade bill"):
        parse_trade_bill(b"a,b,c\r\n1,2,3\r\n")
    with pytest.raises(BillFormatError, match="empty"):
        parse_trade_bill(b"\r\n")
    with pytest.raises(BillFormatError, match="UTF-8"):
        parse_trade_bill(HEADER.encode("gbk"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.01", 1),
        ("12.5", 1250),
        ("12", 1200),
        ("-0.02000", -2),
        ("100000.00", 10_000_000),
    ],
)
def test_yuan_to_fen_is_exact(text: str, expected: int) -> None:
    assert fen(text, line=1, column="x") == expected


@pytest.mark.parametrize("text", ["0.001", "1,000.00", "¥1", "1e3", ""])
def test_amounts_that_are_not_whole_fen_are_refused(text: str) -> None:
    with pytest.raises(BillFormatError):
        fen(text, line=1, column="x")


def _streamed(content: bytes) -> list:
    return list(wechat_bill_lines(content))


def test_the_streaming_reader_gives_the_lines_of_the_whole_bill_parser() -> None:
    content = bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, SUMMARY)

    assert _streamed(content) == list(wechat_lines(parse_trade_bill(content)))
    [entry, *_] = read_trade_bill(content)
    assert entry[:4] == (2, entry[1], "4200000001202603011234567890", "T1")
    assert entry[1].utcoffset() == dt.timedelta(hours=8)


@pytest.mark.parametrize("end", ["\r\n", "\n", "\r"])
def test_the_streaming_reader_takes_bom_tabs_full_width_units_and_any_line_end(
    end: str,
) -> None:
    header = HEADER.replace("应结订单金额", "应结订单金额（元）")
    rows = [",".join(cell + "\t" for cell in row.split(",")) for row in (PAID, REFUND)]
    two = "`2,`12.50,`2.50,`0.00,`0.06000,`12.50,`2.50\t,\t"
    content = "\ufeff" + end.join([header, *rows, SUMMARY_HEADER, two]) + end * 2

    paid, refund = _streamed(content.encode())

    assert (paid.out_trade_no, paid.amount_fen, paid.fee_fen, paid.line) == (
        "T1",
        1250,
        8,
        2,
    )
    assert (refund.out_refund_no, refund.amount_fen, refund.fee_fen) == ("R1", 250, -2)


def test_the_streaming_reader_refuses_a_summary_mismatch_after_the_last_line() -> None:
    wrong = SUMMARY.replace("`0.06000", "`0.07000")
    lines = wechat_bill_lines(
        bill(HEADER, PAID, REFUND, REVOKED, SUMMARY_HEADER, wrong)
    )

    assert [next(lines).out_trade_no for _ in range(3)] == ["T1", "T1", "T2"]
    with pytest.raises(BillFormatError, match="fee_fen"):
        next(lines)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bill(HEADER, PAID, REFUND), "truncated"),
        (bill(HEADER, PAID.replace("`12.50", "`12.505", 1), SUMMARY_HEADER, SUMMARY),
         "whole number of fen"),
        (bill(HEADER, PAID.replace("2026-03-01 12", "2026/03/01 12"), SUMMARY_HEADER,
              SUMMARY), "not a time"),
        (bill(HEADER, PAID.replace("2026-03-01 12", "2026-03-01T12"), SUMMARY_HEADER,
              SUMMARY), "not a time"),
        (bill(HEADER, PAID.replace("`T1", "`"), SUMMARY_HEADER, SUMMARY), "商户订单号"),
        (HEADER.encode() + b"\r\n" + PAID.encode("gbk"), "UTF-8"),
        (bill(HEADER, PAID, SUMMARY_HEADER, SUMMARY, PAID), "after the summary"),
    ],
)  # fmt: skip
def test_the_streaming_reader_refuses_what_the_whole_bill_parser_refuses(
    content: bytes, message: str
) -> None:
    with pytest.raises(BillFormatError, match=message):
        _streamed(content)
    with pytest.raises(BillFormatError, match=message):
        parse_trade_bill(content)


ONE_PAID = "`1,`12.50,`0.00,`0.00,`0.08000,`12.50,`0.00"


def _variant(change) -> bytes:  # type: ignore[no-untyped-def]
    cells = PAID.split(",")
    change(cells)
    return bill(HEADER, ",".join(cells), SUMMARY_HEADER, ONE_PAID)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: None,
        lambda c: c.__setitem__(6, "`T-1_x|y*"),
        lambda c: c.__setitem__(6, "`T1\u3000"),
        lambda c: c.__setitem__(6, "` T1"),
        lambda c: c.__setitem__(5, "`42\t"),
        lambda c: c.__setitem__(9, "`SUCCESS "),
        lambda c: c.__setitem__(12, "`12.50\u00a0"),
        lambda c: c.__setitem__(24, "`\u2003"),
        lambda c: c.__setitem__(24, "`"),
        lambda c: c.__setitem__(26, "12.50"),
        lambda c: c.__setitem__(3, "0"),
        lambda c: c.__setitem__(19, "`\u3000"),
    ],
)
def test_a_row_reads_the_same_however_its_cells_are_quoted_or_spaced(change) -> None:  # type: ignore[no-untyped-def]
    content = _variant(change)

    try:
        whole = list(wechat_lines(parse_trade_bill(content)))
    except BillFormatError as refused:
        with pytest.raises(BillFormatError, match=str(refused)):
            _streamed(content)
        return

    assert _streamed(content) == whole


@pytest.mark.parametrize("end", ["\r\n", "\n", "\r"])
def test_a_long_bill_is_read_in_chunks_with_every_line_numbered(
    end: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reconciliation.bills.wechat as wechat

    monkeypatch.setattr(wechat, "_CHUNK", 97)
    rows = [PAID.replace("`T1,", f"`T{n},") for n in range(40)]
    one = "`40,`500.00,`0.00,`0.00,`3.20000,`500.00,`0.00"
    content = (end.join([HEADER, *rows, "", SUMMARY_HEADER, one]) + end).encode()

    lines = _streamed(content)

    assert [line.out_trade_no for line in lines] == [f"T{n}" for n in range(40)]
    assert [line.line for line in lines] == list(range(2, 42))
