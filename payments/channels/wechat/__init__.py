"""WeChat Pay API v3 through wechatpayv3: ``WechatChannel`` and its config."""

from payments.channels.wechat.channel import DamagedBill, WechatChannel
from payments.channels.wechat.config import WechatConfig

__all__ = ["DamagedBill", "WechatChannel", "WechatConfig"]
