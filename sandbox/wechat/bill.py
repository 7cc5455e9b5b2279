"""The trade bill (交易账单) as WeChat Pay writes it.

A header row with the official Chinese column names, one row per payment and per
refund with every field preceded by a back-quote (so that Excel keeps long numbers
intact), then the summary header and its one back-quoted row. Amounts are yuan;
fees have five decimals but WeChat Pay rounds them to the fen. A refund is its own
row on the day it succeeded, with the refunded fee negative; a reversed code
payment stays listed under its own order number with state REVOKED and no fee.
Summary totals are the sums of the listed rows' columns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

from sandbox.wechat.store import Order, Refund, TradeState

ZONE = ZoneInfo("Asia/Shanghai")

COLUMNS = (
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
)
SUMMARY_COLUMNS = (
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
)
RATE_PER_MILLE = 6
"""0.60%, the usual rate for a school canteen is lower; it only needs to be some."""


def fee_fen(amount_fen: int) -> int:
    """The fee rounded half up to the fen, as WeChat Pay rounds it."""
    return (amount_fen * RATE_PER_MILLE + 500) // 1000


def yuan(fen: int, places: int = 2) -> str:
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole}.{part:02d}" + "0" * (places - 2)


@dataclasses.dataclass
class _Line:
    at: dt.datetime
    cells: dict[str, str]
    settled_fen: int = 0
    refund_fen: int = 0
    fee: int = 0
    order_fen: int = 0
    asked_refund_fen: int = 0


def trade_bill(
    *,
    day: dt.date,
    bill_type: str,
    orders: Sequence[Order],
    refunds: Sequence[Refund],
    orders_by_id: Mapping[str, Order],
    fault: Callable[[str], object],
) -> str | None:
    """The bill of ``day`` (Asia/Shanghai), or None when nothing happened.

    ``fault(out_trade_no)`` says how to spoil that order's payment line:
    ``missing_line``, ``changed_amount`` or ``after_midnight``; a refund's line
    is listed after midnight when ``fault(out_refund_no)`` says so.
    """
    lines: list[_Line] = []
    if bill_type in ("ALL", "SUCCESS"):
        for order in orders:
            line = _payment_line(order, fault(order.out_trade_no))
            if line is None or line.at.astimezone(ZONE).date() != day:
                continue
            if bill_type == "SUCCESS" and order.state == TradeState.REVOKED:
                continue
            lines.append(line)
    if bill_type in ("ALL", "REFUND"):
        for refund in refunds:
            at = refund.success_due
            if fault(refund.out_refund_no) == "after_midnight":
                at = _after_midnight(at)
            if at.astimezone(ZONE).date() == day:
                order = orders_by_id[refund.out_trade_no]
                lines.append(_refund_line(refund, order, at))
    if not lines and not any(
        fault(order.out_trade_no) == "missing_line" for order in orders
    ):
        return None
    lines.sort(key=lambda line: line.at)
    rows = [",".join(COLUMNS)]
    for line in lines:
        rows.append(",".join("`" + line.cells.get(name, "") for name in COLUMNS))
    rows.append(",".join(SUMMARY_COLUMNS))
    summary = (
        str(len(lines)),
        yuan(sum(line.settled_fen for line in lines)),
        yuan(sum(line.refund_fen for line in lines)),
        "0.00",
        yuan(sum(line.fee for line in lines), 5),
        yuan(sum(line.order_fen for line in lines)),
        yuan(sum(line.asked_refund_fen for line in lines)),
    )
    rows.append(",".join("`" + cell for cell in summary))
    return "\r\n".join(rows) + "\r\n"


def _common(order: Order, at: dt.datetime) -> dict[str, str]:
    return {
        "交易时间": at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S"),
        "公众账号ID": order.appid,
        "商户号": order.mchid,
        "特约商户号": "0",
        "设备号": "",
        "微信订单号": order.transaction_id or "",
        "商户订单号": order.out_trade_no,
        "用户标识": order.openid or "",
        "交易类型": order.trade_type,
        "付款银行": "OTHERS",
        "货币种类": "CNY",
        "代金券金额": "0.00",
        "充值券退款金额": "0.00",
        "商品名称": order.description,
        "商户数据包": order.attach or "",
        "费率": f"{RATE_PER_MILLE / 10:.2f}%",
        "费率备注": "",
    }


def _payment_line(order: Order, fault: object) -> _Line | None:
    if not order.was_paid or order.success_at is None or fault == "missing_line":
        return None
    at = order.success_at
    if fault == "after_midnight":
        at = _after_midnight(at)
    total = order.total_fen + (100 if fault == "changed_amount" else 0)
    revoked = order.state == TradeState.REVOKED
    fee = 0 if revoked else fee_fen(total)
    cells = _common(order, at) | {
        "交易状态": "REVOKED" if revoked else "SUCCESS",
        "应结订单金额": yuan(total),
        "微信退款单号": "0",
        "商户退款单号": "0",
        "退款金额": "0.00",
        "退款类型": "",
        "退款状态": "",
        "手续费": yuan(fee, 5),
        "订单金额": yuan(total),
        "申请退款金额": "0.00",
    }
    return _Line(at, cells, settled_fen=total, fee=fee, order_fen=total)


def _after_midnight(at: dt.datetime) -> dt.datetime:
    """A moment just after the next midnight (Asia/Shanghai), as a channel whose
    clock was a little ahead would have listed ``at``."""
    local = at.astimezone(ZONE)
    return dt.datetime.combine(
        local.date() + dt.timedelta(days=1), dt.time(0, 0, 1 + local.second % 58), ZONE
    )


def _refund_line(refund: Refund, order: Order, at: dt.datetime) -> _Line:
    fee = -fee_fen(refund.amount_fen)
    cells = _common(order, at) | {
        "交易状态": "REFUND",
        "应结订单金额": "0.00",
        "微信退款单号": refund.refund_id,
        "商户退款单号": refund.out_refund_no,
        "退款金额": yuan(refund.amount_fen),
        "退款类型": "ORIGINAL",
        "退款状态": "SUCCESS",
        "手续费": yuan(fee, 5),
        "订单金额": "0.00",
        "申请退款金额": yuan(refund.amount_fen),
    }
    return _Line(
        at,
        cells,
        refund_fen=refund.amount_fen,
        fee=fee,
        asked_refund_fen=refund.amount_fen,
    )
