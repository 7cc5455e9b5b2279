"""A sandbox Alipay open-platform gateway: see ``sandbox.alipay.gateway``."""

from sandbox.alipay.gateway import AlipayGateway

__all__ = ["AlipayGateway"]
