"""Matching, without a database: every kind, named by its outcome."""

from __future__ import annotations

import datetime as dt

from payments.orders import OrderRecord, RefundRecord
from reconciliation.lines import BillLine, ChannelState, LineKind
from reconciliation.matching import (
    DayMatch,
    FindingKind,
    check_fees,
    day_order_type,
    expected_fee_fen,
    match_payments,
    match_refunds,
)

AT = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)


def _line(
    number,
    amount=1000,
    state=ChannelState.PAID,
    kind=LineKind.PAYMENT,
    refund="",
    fee=6,
):
    return BillLine(
        kind=kind,
        state=state,
        out_trade_no=number,
        transaction_id=f"42{number}",
        amount_fen=amount,
        fee_fen=fee,
        traded_at=AT,
        out_refund_no=refund,
    )


def _order(number, state="paid", amount=1000):
    return OrderRecord(
        kind="pos_payment",
        out_trade_no=number,
        channel="wechat",
        state=state,
        amount_fen=amount,
        transaction_id=f"42{number}",
        paid_at=AT,
        merchant="C1W01",
    )


def _kinds(findings):
    return {finding.key: (finding.kind, finding.repairable) for finding in findings}


def test_both_ways_every_payment_kind():
    lines = [
        _line("A"),
        _line("B"),
        _line("C", amount=1200),
        _line("D"),
        _line("E", state=ChannelState.REVERSED),
        _line("F"),
    ]
    ours = {"A": _order("A"), "C": _order("C"), "E": _order("E"), "G": _order("G")}
    elsewhere = {"D": _order("D", state="unpaid"), "F": _order("F", state="closed")}

    findings = _kinds(match_payments(lines, ours, elsewhere.get))

    assert findings == {
        "A": (FindingKind.MATCHED, False),
        "B": (FindingKind.CHANNEL_ONLY, False),  # an order we do not know
        "C": (FindingKind.AMOUNT_MISMATCH, False),
        "D": (FindingKind.CHANNEL_ONLY, True),  # a lost notification: repairable
        "E": (FindingKind.STATUS_MISMATCH, False),  # reversed there, paid here
        "F": (FindingKind.CHANNEL_ONLY, False),  # paid after we closed it
        "G": (FindingKind.OURS_ONLY, False),
    }


def test_a_reversed_code_payment_we_also_count_as_reversed_matches():
    lines = [_line("R", state=ChannelState.REVERSED)]

    findings = _kinds(match_payments(lines, {}, {"R": _order("R", "reversed")}.get))

    assert findings == {"R": (FindingKind.MATCHED, False)}


def test_refunds_are_matched_on_their_own_numbers():
    lines = [
        _line(
            "P",
            amount=300,
            kind=LineKind.REFUND,
            state=ChannelState.REFUNDED,
            refund="R1",
            fee=-2,
        ),
        _line(
            "P",
            amount=200,
            kind=LineKind.REFUND,
            state=ChannelState.REFUNDED,
            refund="R2",
            fee=-1,
        ),
        _line(
            "P",
            amount=100,
            kind=LineKind.REFUND,
            state=ChannelState.REFUNDED,
            refund="R3",
            fee=0,
        ),
    ]

    def refund(number, amount, state="succeeded"):
        return RefundRecord(
            kind="pos_refund",
            out_refund_no=number,
            out_trade_no="P",
            channel="wechat",
            state=state,
            amount_fen=amount,
            refund_id=None,
            refunded_at=AT,
        )

    ours = {"R1": refund("R1", 300), "R2": refund("R2", 250), "R4": refund("R4", 50)}
    findings = _kinds(
        match_refunds(lines, ours, {"R3": refund("R3", 100, "processing")}.get)
    )

    assert findings == {
        "R1": (FindingKind.MATCHED, False),
        "R2": (FindingKind.REFUND_MISMATCH, False),
        "R3": (FindingKind.REFUND_MISMATCH, True),
        "R4": (FindingKind.REFUND_MISMATCH, False),
    }


def test_fees_at_the_contract_rate_pass_and_others_are_found():
    fair = [
        _line(str(n), amount=1000 + n, fee=expected_fee_fen(1000 + n, 60))
        for n in range(50)
    ]
    greedy = [*fair[:-1], _line("X", amount=1049, fee=9)]

    assert check_fees(fair, 60) is None
    finding = check_fees(greedy, 60)
    assert finding is not None and finding.kind is FindingKind.FEE_MISMATCH
    assert expected_fee_fen(1250, 60) == 8  # 7.5 fen rounds half up


def test_a_day_matched_line_by_line_finds_what_the_whole_bill_matching_finds():
    lines = [
        _line("A"),
        _line("B"),
        _line("C", amount=1200),
        _line("D"),
        _line("E", state=ChannelState.REVERSED),
        _line("F"),
        _line("H", fee=5),
        _line("P", kind=LineKind.REFUND, state=ChannelState.REFUNDED, refund="R1"),
        _line("P", kind=LineKind.REFUND, state=ChannelState.REFUNDED, refund="R9"),
    ]

    def ours():
        return {n: _order(n) for n in "ACEGH"}

    elsewhere = {"D": _order("D", state="unpaid"), "F": _order("F", state="closed")}
    refund = RefundRecord(
        kind="pos_refund",
        out_refund_no="R1",
        out_trade_no="P",
        channel="wechat",
        state="succeeded",
        amount_fen=1000,
        refund_id=None,
        refunded_at=AT,
    )
    whole = [
        *match_payments(lines, ours(), elsewhere.get),
        *match_refunds(lines, {"R1": refund}, {}.get),
    ]
    fee = check_fees(lines, 60)
    assert fee is not None
    whole.append(fee)

    day = DayMatch(ours(), {"R1": refund}, 60)
    for line in lines:
        day.add(line)
    found = day.finish(elsewhere.get, {}.get)

    matched = [f for f in whole if f.kind is FindingKind.MATCHED]
    assert sorted(found, key=repr) == sorted(
        (f for f in whole if f.kind is not FindingKind.MATCHED), key=repr
    )
    assert day.matched == len(matched) == 3  # A, H and the refund R1
    assert day.lines == len(lines)
    assert day.fee_fen == sum(line.fee_fen for line in lines)
    # Matched merchant payments keep their fee for settlement, nothing else.
    assert day.merchant_fees == [("A", "C1W01", 6), ("H", "C1W01", 5)]


def test_a_matched_line_of_an_order_paid_another_day_is_returned_to_close_its_hold():
    earlier = _order("Y")
    day = DayMatch({}, {}, 60)
    day.add(_line("Y"))

    [finding] = day.finish({"Y": earlier}.get, {}.get)

    assert finding.kind is FindingKind.MATCHED and finding.ours is earlier
    assert day.matched == 1


def _refund(number, amount, state="succeeded", merchant="C1W01"):
    return RefundRecord(
        kind="pos_refund",
        out_refund_no=number,
        out_trade_no="P",
        channel="wechat",
        state=state,
        amount_fen=amount,
        refund_id=None,
        refunded_at=AT,
        merchant=merchant,
    )


def _refund_line(number, amount, fee):
    return _line(
        "P",
        amount=amount,
        kind=LineKind.REFUND,
        state=ChannelState.REFUNDED,
        refund=number,
        fee=fee,
    )


def test_a_processing_refund_is_repairable_only_for_the_amount_the_channel_refunded():
    lines = [_refund_line("R1", 300, -2), _refund_line("R2", 300, -2)]
    processing = {
        "R1": _refund("R1", 300, "processing"),
        "R2": _refund("R2", 250, "processing"),
    }

    findings = _kinds(match_refunds(lines, {}, processing.get))

    assert findings == {
        "R1": (FindingKind.REFUND_MISMATCH, True),
        "R2": (FindingKind.REFUND_MISMATCH, False),
    }


def test_a_matched_merchant_refund_keeps_the_fee_given_back_for_settlement():
    day = DayMatch({}, {"R1": _refund("R1", 300)}, 60)
    day.add(_refund_line("R1", 300, -2))
    day.add(_refund_line("R2", 100, -1))  # found elsewhere, matched there

    day.finish({}.get, {"R2": _refund("R2", 100)}.get)

    assert day.matched == 2
    assert day.merchant_fees == [("R1", "C1W01", -2), ("R2", "C1W01", -1)]


def test_the_days_orders_read_lean_sort_as_their_full_records_do():
    def lean(number, amount=1000):
        return day_order_type("pos_payment", "wechat")(
            number, amount, f"42{number}", "C1W01"
        )

    lines = [
        _line("A"),
        _line("B", amount=900),
        _line("C", state=ChannelState.REVERSED),
    ]
    full = DayMatch({n: _order(n) for n in "ABCD"}, {}, 60)
    read = DayMatch({n: lean(n) for n in "ABCD"}, {}, 60)

    for line in lines:
        full.add(line)
        read.add(line)

    found = read.finish(lambda number: None, lambda number: None)
    assert _kinds(found) == _kinds(full.finish(lambda n: None, lambda n: None))
    assert _kinds(found) == {
        "B": (FindingKind.AMOUNT_MISMATCH, False),
        "C": (FindingKind.STATUS_MISMATCH, False),
        "D": (FindingKind.OURS_ONLY, False),
        "fees": (FindingKind.FEE_MISMATCH, False),
    }
    assert (read.matched, read.merchant_fees) == (full.matched, full.merchant_fees)
    assert {f.key: f.ours.amount_fen for f in found if f.ours} == {
        "B": 1000,
        "C": 1000,
        "D": 1000,
    }


def test_lines_taken_as_they_are_read_sort_as_lines_added_do():
    lines = [
        _line("A"),
        _line("B", amount=900),
        _line("C", state=ChannelState.REVERSED),
        _line("E"),
    ]
    added = DayMatch({n: _order(n) for n in "ABCD"}, {}, 70)
    taken = DayMatch({n: _order(n) for n in "ABCD"}, {}, 70)

    for line in lines:
        added.add(line)
        if line.state is not ChannelState.PAID or not taken.take_paid(
            line.out_trade_no, line.transaction_id, line.amount_fen, line.fee_fen
        ):
            taken.add(line)

    found = taken.finish(lambda number: None, lambda number: None)
    assert _kinds(found) == _kinds(added.finish(lambda n: None, lambda n: None))
    assert _kinds(found)["fees"] == (FindingKind.FEE_MISMATCH, False)
    assert (taken.lines, taken.matched, taken.fee_fen, taken.merchant_fees) == (
        added.lines,
        added.matched,
        added.fee_fen,
        added.merchant_fees,
    )
    assert taken.matched == 1
