"""The daily trade bill as Alipay's bill download serves it.

``alipay.data.dataservice.bill.downloadurl.query`` answers a short-lived URL to a
zip holding two GBK CSV files, ``<pid>_<yyyymmdd>_业务明细.csv`` (every trade and
refund completed that day) and ``<pid>_<yyyymmdd>_业务明细(汇总).csv`` (totals per
store and overall). Both carry ``#`` comment lines above and below the table; the
detail file ends every value with a tab so that spreadsheets keep long numbers as
text. The zip's member names are GBK bytes without the UTF-8 flag, as Alipay's are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import zipfile
from collections.abc import Sequence
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

DETAIL_COLUMNS = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
SUMMARY_COLUMNS = (
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
)
RULE = "-" * 41


@dataclasses.dataclass(frozen=True)
class BillLine:
    """One trade or refund as the bill lists it; amounts signed, in fen."""

    trade_no: str
    out_trade_no: str
    kind: str
    """交易 or 退款."""
    subject: str
    created_at: dt.datetime
    finished_at: dt.datetime
    buyer_account: str
    amount_fen: int
    received_fen: int
    fee_fen: int
    out_request_no: str = ""


def service_fee_fen(amount_fen: int) -> int:
    """Alipay's 0.6 % face-to-face rate, rounded half up to the fen; a refund
    gives back its share of the fee (negative amount, negative fee)."""
    sign = -1 if amount_fen < 0 else 1
    return sign * ((abs(amount_fen) * 6 + 500) // 1000)


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole}.{part:02d}"


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _chinese_stamp(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y年%m月%d日 %H:%M:%S")


def build_zip(
    *,
    seller_id: str,
    day: dt.date,
    lines: Sequence[BillLine],
    exported_at: dt.datetime,
) -> tuple[str, bytes]:
    """The zip's file name and bytes."""
    stem = f"{seller_id}_{day:%Y%m%d}"
    start = dt.datetime.combine(day, dt.time(), SHANGHAI)
    heading = [
        f"#账号：[{seller_id}]",
        f"#起始日期：[{_chinese_stamp(start)}]   "
        f"终止日期：[{_chinese_stamp(start + dt.timedelta(days=1))}]",
    ]
    trades = [line for line in lines if line.kind == "交易"]
    refunds = [line for line in lines if line.kind == "退款"]

    detail = ["#支付宝业务明细查询", *heading, f"#{RULE}业务明细列表{RULE}"]
    detail.append(",".join(DETAIL_COLUMNS))
    for line in lines:
        values = (
            line.trade_no,
            line.out_trade_no,
            line.kind,
            line.subject,
            _stamp(line.created_at),
            _stamp(line.finished_at),
            "",
            "",
            "",
            "",
            line.buyer_account,
            yuan(line.amount_fen),
            yuan(line.received_fen),
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "",
            "0.00",
            "0.00",
            line.out_request_no,
            yuan(-line.fee_fen),
            "0.00",
            "",
        )
        detail.append(",".join(value + "\t" for value in values))
    detail += [
        f"#{RULE}业务明细列表结束{RULE}",
        f"#交易合计：{len(trades)}笔，退款合计：{len(refunds)}笔",
        f"#导出时间：[{_chinese_stamp(exported_at)}]",
    ]

    amount = sum(line.amount_fen for line in lines)
    received = sum(line.received_fen for line in lines)
    fee = sum(line.fee_fen for line in lines)
    totals = (
        str(len(trades)),
        str(len(refunds)),
        yuan(amount),
        yuan(received),
        "0.00",
        "0.00",
        "0.00",
        yuan(-fee),
        "0.00",
        yuan(received - fee),
    )
    summary = ["#支付宝业务汇总查询", *heading, ",".join(SUMMARY_COLUMNS)]
    if lines:
        summary.append(",".join(("", "", *totals)))
    summary += [
        ",".join(("合计", "", *totals)),
        f"#导出时间：[{_chinese_stamp(exported_at)}]",
    ]

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows in (
            (f"{stem}_业务明细.csv", detail),
            (f"{stem}_业务明细(汇总).csv", summary),
        ):
            info = _GbkZipInfo(
                name, date_time=exported_at.astimezone(SHANGHAI).timetuple()[:6]
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, ("\r\n".join(rows) + "\r\n").encode("gbk"))
    return f"{stem}.csv.zip", buffer.getvalue()


class _GbkZipInfo(zipfile.ZipInfo):
    """Writes the member name as GBK bytes without the UTF-8 flag, as Windows
    tools and Alipay do; ``zipfile`` would otherwise write UTF-8 and set it.
    It overrides a private method of the standard library's ``ZipInfo``, which
    has kept its name and meaning since Python 3.0."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # noqa: N802
        return self.filename.encode("gbk"), self.flag_bits & ~0x800
