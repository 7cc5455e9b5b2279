"""Parsing Alipay's bill zip: by header name, GBK throughout, fen exactly, and a
clear refusal of anything cut short or malformed."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciliation.bills.alipay import MalformedBill, parse_alipay_bill
from sandbox.alipay.bills import SHANGHAI, BillLine, build_zip

DAY = dt.date(2026, 12, 2)
PID = "2088721000000001"


class GbkName(zipfile.ZipInfo):
    """A member name written as GBK bytes without the UTF-8 flag, as Alipay's."""

    def _encodeFilenameFlags(self):  # noqa: N802
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def pack(detail: str, summary: str, *, gbk_names: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for suffix, text in (("业务明细", detail), ("业务明细(汇总)", summary)):
            name = f"{PID}_{DAY:%Y%m%d}_{suffix}.csv"
            info = GbkName(name) if gbk_names else zipfile.ZipInfo(name)
            archive.writestr(info, text.replace("\n", "\r\n").encode("gbk"))
    return buffer.getvalue()


# The official layout, written out by hand (not by the sandbox), with the
# columns in another order than Alipay's and one column more: parsing goes by
# header name.
DETAIL = """#支付宝业务明细查询
#账号：[2088721000000001]
#起始日期：[2026年12月02日 00:00:00]   终止日期：[2026年12月03日 00:00:00]
#-----------------------------------------业务明细列表----------------------------------------
商户订单号,支付宝交易号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,商家实收（元）,订单金额（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注,新增列
T001\t,2026120222001404500500000001\t,交易\t,一食堂 午餐\t,2026-12-02 11:58:01\t,2026-12-02 11:58:03\t,\t,\t,\t,\t,zha***@sandbox.example\t,12.50\t,12.50\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t,-0.08\t,0.00\t,\t,x\t
T002\t,2026120222001404500500000002\t,交易\t,夜宵\t,2026-12-02 23:59:58\t,2026-12-02 23:59:59\t,\t,\t,\t,\t,138****0002\t,1234567.89\t,1234567.89\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t,-7407.41\t,0.00\t,\t,\t
T001\t,2026120222001404500500000001\t,退款\t,一食堂 午餐\t,2026-12-02 11:58:01\t,2026-12-02 15:00:00\t,\t,\t,\t,\t,zha***@sandbox.example\t,-2.50\t,-2.50\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,T001-R1\t,0.02\t,0.00\t,\t,\t
#-----------------------------------------业务明细列表结束------------------------------------
#交易合计：2笔，退款合计：1笔
#导出时间：[2026年12月03日 09:00:00]
"""  # noqa: E501 (bill lines are as long as Alipay writes them)
SUMMARY = """#支付宝业务汇总查询
#账号：[2088721000000001]
#起始日期：[2026年12月02日 00:00:00]   终止日期：[2026年12月03日 00:00:00]
门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）
,,2,1,1234577.89,1234577.89,0.00,0.00,0.00,-7407.47,0.00,1227170.42
合计,,2,1,1234577.89,1234577.89,0.00,0.00,0.00,-7407.47,0.00,1227170.42
#导出时间：[2026年12月03日 09:00:00]
"""


def test_a_bill_parses_by_header_name():
    bill = parse_alipay_bill(pack(DETAIL, SUMMARY))

    first, big, refund = bill.lines
    assert (bill.account, bill.day) == (PID, DAY)
    assert first.out_trade_no == "T001" and first.trade_no.endswith("0001")
    assert (first.amount_fen, first.received_fen, first.fee_fen) == (1250, 1250, -8)
    assert first.finished_at == dt.datetime(2026, 12, 2, 11, 58, 3, tzinfo=SHANGHAI)
    assert big.amount_fen == 123456789
    assert (refund.kind, refund.amount_fen, refund.out_request_no) == (
        "退款",
        -250,
        "T001-R1",
    )
    assert first.columns["新增列"] == "x"
    assert bill.summary.trade_count == 2 and bill.summary.refund_count == 1
    assert bill.summary.net_fen == 122717042
    assert bill.totals_match_summary()


def test_gbk_member_names_are_read_as_gbk():
    bill = parse_alipay_bill(pack(DETAIL, SUMMARY))
    assert bill.detail_name == f"{PID}_20261202_业务明细.csv"
    assert bill.summary_name == f"{PID}_20261202_业务明细(汇总).csv"


def test_utf8_flagged_member_names_are_read_too():
    bill = parse_alipay_bill(pack(DETAIL, SUMMARY, gbk_names=False))
    assert len(bill.lines) == 3


def test_a_summary_that_disagrees_is_reported():
    tampered = SUMMARY.replace("合计,,2,1,1234577.89", "合计,,2,1,1234577.90")
    assert not parse_alipay_bill(pack(DETAIL, tampered)).totals_match_summary()


@pytest.mark.parametrize(
    ("detail", "summary", "says"),
    [
        (
            DETAIL.split("#-----------------------------------------业务明细列表结束")[
                0
            ],
            SUMMARY,
            "cut short",
        ),
        (DETAIL.replace("#交易合计：2笔", "#交易合计：3笔"), SUMMARY, "footer says"),
        (DETAIL.replace("服务费（元）", "手续费（元）"), SUMMARY, "missing columns"),
        (DETAIL.replace("12.50\t,12.50", "12.505\t,12.50"), SUMMARY, "not an amount"),
        (
            DETAIL.replace("1234567.89\t,1234567.89", "1e6\t,1234567.89"),
            SUMMARY,
            "not an amount",
        ),
        (DETAIL.replace(",x\t\n", "\n"), SUMMARY, "fields"),
        (DETAIL.replace("交易\t,夜宵", "转账\t,夜宵"), SUMMARY, "业务类型"),
        (DETAIL, SUMMARY.replace("合计,,", "总计,,"), "合计"),
    ],
)
def test_a_malformed_bill_is_refused_with_a_reason(detail, summary, says):
    with pytest.raises(MalformedBill) as refused:
        parse_alipay_bill(pack(detail, summary))
    assert says in str(refused.value)


def test_a_truncated_download_is_refused():
    whole = pack(DETAIL, SUMMARY)
    with pytest.raises(MalformedBill):
        parse_alipay_bill(whole[: len(whole) // 2])


def test_a_zip_without_the_summary_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(GbkName(f"{PID}_20261202_业务明细.csv"), DETAIL.encode("gbk"))
    with pytest.raises(MalformedBill):
        parse_alipay_bill(buffer.getvalue())


def test_text_that_is_not_gbk_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(GbkName(f"{PID}_20261202_业务明细.csv"), b"\xff\xff\xff")
        archive.writestr(GbkName(f"{PID}_20261202_业务明细(汇总).csv"), b"")
    with pytest.raises(MalformedBill) as refused:
        parse_alipay_bill(buffer.getvalue())
    assert "GBK" in str(refused.value)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**10), min_size=0, max_size=6))
def test_amounts_survive_the_round_trip_exactly(amounts):
    moment = dt.datetime(2026, 12, 2, 12, 0, tzinfo=SHANGHAI)
    lines = [
        BillLine(
            trade_no=f"{n:028d}",
            out_trade_no=f"T{n}",
            kind="交易",
            subject="测试",
            created_at=moment,
            finished_at=moment,
            buyer_account="a***@b.c",
            amount_fen=fen,
            received_fen=fen,
            fee_fen=(fen * 6 + 500) // 1000,
        )
        for n, fen in enumerate(amounts)
    ]
    _, content = build_zip(
        seller_id=PID, day=DAY, lines=lines, exported_at=moment + dt.timedelta(days=1)
    )

    bill = parse_alipay_bill(content)

    assert [line.amount_fen for line in bill.lines] == amounts
    assert bill.summary.amount_fen == sum(amounts)
    assert bill.totals_match_summary()
