"""WeChat Pay and Alipay gateway simulators that speak the real protocols.

``create_sandbox`` builds one ``Sandbox`` (clock, faults, outbox) with every gateway
that is installed and the shared control and payer pages; ``Sandbox.wsgi()`` is what
gets served, standalone or mounted under the service at ``/sandbox``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from sandbox.core import Clock, Sandbox

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DemoPayer:
    """A person with a phone, the same in every gateway so that one payer page
    shows all their payment codes."""

    id: str
    name: str
    name_en: str
    balance_fen: int
    """Starting balance of the payer's wallet in each channel."""


DEMO_PAYERS = (
    DemoPayer("demo-1", "张三", "Zhang San", 100_000),
    DemoPayer("demo-2", "李四", "Li Si", 20_000),
    DemoPayer("demo-3", "王五", "Wang Wu", 500),
)


def create_sandbox(instance_path: Path | str, clock: Clock | None = None) -> Sandbox:
    """A sandbox keeping its state and keys under ``<instance_path>/sandbox/``."""
    from sandbox import control
    from sandbox.wechat import WechatGateway

    sandbox = Sandbox(Path(instance_path), clock)
    sandbox.register(WechatGateway(sandbox))
    try:
        from sandbox.alipay import AlipayGateway
    except ImportError:
        logger.info("sandbox_gateway_missing", extra={"gateway": "alipay"})
    else:
        sandbox.register(AlipayGateway(sandbox))
    sandbox.control_app = control.create_control_app(sandbox)
    return sandbox
