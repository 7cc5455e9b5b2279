"""A WeChat Pay API v3 gateway simulator: see ``gateway``."""

from sandbox.wechat.gateway import FAULT_NAMES, WechatGateway

__all__ = ["FAULT_NAMES", "WechatGateway"]
