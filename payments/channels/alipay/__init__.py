"""Alipay: the channel adapter (``channel``) and its settings (``config``)."""

from payments.channels.alipay.channel import AlipayChannel
from payments.channels.alipay.config import AlipayConfig

__all__ = ["AlipayChannel", "AlipayConfig"]
