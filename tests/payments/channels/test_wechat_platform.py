"""Platform-certificate mode through a rotation: two certificates valid at once,
the one that signed chosen by ``Wechatpay-Serial``, a new one fetched when an
answer names a serial we have not seen."""

# The shared sandbox fixtures are imported by name, so each test's parameter of
# the same name looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from payments.channels.base import (
    BadNotificationSignature,
    OrderRequest,
    PayerContext,
    PayerKind,
)
from payments.channels.wechat import WechatChannel
from tests.sandbox.conftest import (  # noqa: F401 (fixtures)
    ServedSandbox,
    _served,
    make_wechat_channel,
    sandbox_instance,
    served_sandbox,
)


def signed_call(wechat: WechatChannel) -> None:
    """A call answered 2xx, whose signature the SDK checks (it checks no other)."""
    order = OrderRequest(
        "R" + uuid.uuid4().hex[:20], 100, "轮换 rotation", "http://127.0.0.1:9/notify"
    )
    assert wechat.create_order(order, PayerContext(PayerKind.NATIVE)).qr_content


def test_both_certificates_verify_whichever_signs(
    make_wechat_channel,
    served_sandbox: ServedSandbox,
) -> None:
    gateway = served_sandbox.sandbox.gateways["wechat"]
    old, new = gateway.keys.platform_certificates  # type: ignore[attr-defined]
    wechat = make_wechat_channel("certificate")
    for platform in (old, new, old):
        gateway.configure(signing_serial=platform.serial)  # type: ignore[attr-defined]
        signed_call(wechat)
    held = {format(c.serial_number, "X") for c in wechat.client._core._certificates}
    assert held == {old.serial, new.serial}


def test_a_new_serial_is_fetched_and_kept_in_the_cert_dir(
    make_wechat_channel,
    served_sandbox: ServedSandbox,
    tmp_path: Path,
) -> None:
    gateway = served_sandbox.sandbox.gateways["wechat"]
    old, new = gateway.keys.platform_certificates  # type: ignore[attr-defined]
    # A merchant that downloaded certificates before the rotation has only the
    # old one on disk and starts without asking the gateway.
    (tmp_path / f"{old.serial}.pem").write_text(old.pem)
    gateway.configure(signing_serial=new.serial)  # type: ignore[attr-defined]
    wechat = make_wechat_channel("certificate", cert_dir=tmp_path)
    assert [
        format(c.serial_number, "X") for c in wechat.client._core._certificates
    ] == [old.serial]

    signed_call(wechat)
    assert sorted(p.stem for p in tmp_path.glob("*.pem")) == sorted(
        [old.serial, new.serial]
    )


def test_public_key_mode_never_needs_the_certificates(
    make_wechat_channel,
    served_sandbox: ServedSandbox,
) -> None:
    wechat = make_wechat_channel("public_key")
    signed_call(wechat)
    assert wechat.client._core._certificates == []


def test_notifications_naming_unknown_serials_do_not_flood_the_gateway(
    make_wechat_channel, served_sandbox: ServedSandbox
) -> None:
    gateway = served_sandbox.sandbox.gateways["wechat"]
    wechat = make_wechat_channel("certificate")
    signed_call(wechat)
    before = gateway.certificate_downloads  # type: ignore[attr-defined]
    headers = {
        "Wechatpay-Timestamp": str(int(served_sandbox.clock.now().timestamp())),
        "Wechatpay-Nonce": "n",
        "Wechatpay-Signature": "c2lnbmF0dXJl",
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    for serial in ("ABCDEF01", "ABCDEF02", "ABCDEF03"):
        with pytest.raises(BadNotificationSignature):
            wechat.parse_notification(
                headers | {"Wechatpay-Serial": serial}, b'{"id": "x"}'
            )
    # The first unknown serial may be a rotation and is worth one download; the
    # rest within the minute are not.
    assert gateway.certificate_downloads - before <= 1  # type: ignore[attr-defined]
