"""The gaps wechatpayv3 leaves open, closed by our adapter: forged answers, stale,
duplicate, badly signed or undecryptable notifications, damaged bills, and
sandbox keys in production."""

# The shared sandbox fixtures are imported by name, so each test's parameter of
# the same name looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.wrappers import Request, Response

from campus.settings import Settings
from payments.channels.base import (
    BadNotificationSignature,
    ChannelNotConfigured,
    ChannelRejected,
    ChannelUnavailable,
    DuplicateNotification,
    ForgedResponse,
    MalformedNotification,
    OrderRequest,
    PayerContext,
    PayerKind,
    StaleNotification,
    TradeState,
)
from payments.channels.received import remember_accepted
from payments.channels.wechat import DamagedBill, WechatChannel, WechatConfig
from sandbox.core import LoopbackServer
from sandbox.wechat import protocol
from tests.sandbox.conftest import (  # noqa: F401 (fixtures)
    Receiver,
    ServedSandbox,
    _receiver,
    _served,
    make_wechat_channel,
    receiver,
    sandbox_instance,
    served_sandbox,
)


class Impostor:
    """Something at the gateway's address that is not WeChat Pay: it answers
    every call ``status`` (200 unless told) with ``payload`` as JSON, or with
    ``page`` as HTML, signed by ``key`` under ``serial`` or not signed at all."""

    def __init__(self) -> None:
        self.payload: dict[str, Any] = {}
        self.page: str | None = None
        self.status = 200
        self.key: rsa.RSAPrivateKey | None = None
        self.serial = ""
        self.server = LoopbackServer(self._app).start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        Request(environ).get_data()
        if self.page is not None:
            body, headers = self.page, {"Content-Type": "text/html"}
        else:
            body = json.dumps(self.payload)
            headers = {"Content-Type": "application/json"}
        if self.key is not None:
            headers |= protocol.signed_headers(
                self.key, self.serial, body, int(__import__("time").time())
            )
        return Response(body, status=self.status, headers=headers)(
            environ, start_response
        )


@pytest.fixture
def impostor() -> Iterator[Impostor]:
    impostor = Impostor()
    yield impostor
    impostor.server.stop()


def order_for(receiver: Receiver, amount_fen: int = 100) -> OrderRequest:
    return OrderRequest(
        "S" + uuid.uuid4().hex[:24], amount_fen, "测试 test", receiver.url("/notify")
    )


def paid_notification(
    served: ServedSandbox, wechat: WechatChannel, receiver: Receiver
) -> tuple[dict[str, str], bytes]:
    checkout = wechat.create_order(order_for(receiver), PayerContext(PayerKind.NATIVE))
    served.pay((checkout.qr_content or "").rsplit("pr=", 1)[1])
    served.deliver()
    notice = receiver.received[-1]
    return notice.headers, notice.body


def test_a_2xx_answer_without_a_signature_is_forged(
    make_wechat_channel,
    impostor: Impostor,
) -> None:
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    impostor.payload = {
        "out_trade_no": "X1",
        "trade_state": "SUCCESS",
        "amount": {"total": 100},
    }
    with pytest.raises(ForgedResponse):
        wechat.query("X1")


def test_a_2xx_answer_signed_by_another_key_is_forged(
    make_wechat_channel,
    impostor: Impostor,
) -> None:
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    impostor.payload = {
        "out_trade_no": "X1",
        "trade_state": "SUCCESS",
        "amount": {"total": 100},
    }
    impostor.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    impostor.serial = wechat.config.public_key_id or ""
    with pytest.raises(ForgedResponse):
        wechat.query("X1")


ORDER_NOT_EXIST = {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}


@pytest.mark.parametrize("signature", ["none", "another_key"])
def test_a_404_order_not_exist_not_signed_by_wechat_pay_is_forged(
    make_wechat_channel, impostor: Impostor, caplog, signature: str
) -> None:
    # Believed, it would make a paid order look absent: the query job would then
    # close it here without asking WeChat Pay to close it.
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    impostor.status, impostor.payload = 404, ORDER_NOT_EXIST
    if signature == "another_key":
        impostor.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        impostor.serial = wechat.config.public_key_id or ""

    with pytest.raises(ForgedResponse) as forged:
        wechat.query("X1")

    assert forged.value.out_trade_no == "X1"
    assert any(
        record.message == "wechat_answer_forged"
        and record.out_trade_no == "X1"
        and record.claimed_code == "ORDER_NOT_EXIST"
        for record in caplog.records
    )


def test_a_404_order_not_exist_signed_by_wechat_pay_is_no_such_order(
    make_wechat_channel, impostor: Impostor, served_sandbox: ServedSandbox
) -> None:
    # The same answer with the platform key's signature is believed.
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    keys = served_sandbox.sandbox.gateways["wechat"].keys  # type: ignore[attr-defined]
    impostor.key, impostor.serial = keys.public_key_private, keys.public_key_id
    impostor.status, impostor.payload = 404, ORDER_NOT_EXIST

    assert wechat.query("X1").state is TradeState.NOT_FOUND


@pytest.mark.parametrize(
    ("operation", "status", "payload"),
    [
        ("create_order", 400, {"code": "PARAM_ERROR", "message": "参数错误"}),
        ("create_order", 403, {"code": "NOAUTH", "message": "商户无权限"}),
        ("close", 400, {"code": "ORDERPAID", "message": "订单已支付"}),
        ("close", 404, ORDER_NOT_EXIST),
        ("reverse", 404, ORDER_NOT_EXIST),
    ],
)
def test_an_unsigned_refusal_is_forged_not_a_refusal(
    make_wechat_channel,
    impostor: Impostor,
    receiver: Receiver,
    operation: str,
    status: int,
    payload: dict[str, str],
) -> None:
    # A refusal ends an order here (a top-up fails, a code payment is given up):
    # only WeChat Pay's own word may do that.
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    impostor.status, impostor.payload = status, payload

    with pytest.raises(ForgedResponse):
        if operation == "create_order":
            wechat.create_order(order_for(receiver), PayerContext(PayerKind.NATIVE))
        else:
            getattr(wechat, operation)("X1")


def test_an_unsigned_error_page_from_a_proxy_is_unavailable(
    make_wechat_channel, impostor: Impostor
) -> None:
    # A load balancer's 502 is not WeChat Pay's answer and claims no code: the
    # outcome is unknown, as for a timeout, and the order is asked about again.
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    impostor.status, impostor.page = 502, "<html><h1>502 Bad Gateway</h1></html>"

    with pytest.raises(ChannelUnavailable) as unavailable:
        wechat.query("X1")

    assert not isinstance(unavailable.value, ForgedResponse | ChannelRejected)


def test_an_unsigned_sign_error_points_at_our_own_key(
    make_wechat_channel, impostor: Impostor, caplog
) -> None:
    # WeChat Pay does not sign its refusal of our signature: our key or serial is
    # the likely fault, and the order's outcome is unknown, not forged.
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    impostor.status = 401
    impostor.payload = {"code": "SIGN_ERROR", "message": "签名错误"}

    with pytest.raises(ChannelUnavailable) as unavailable:
        wechat.query("X1")

    assert not isinstance(unavailable.value, ForgedResponse | ChannelRejected)
    assert "CAMPUS_WECHAT_PRIVATE_KEY_FILE" in str(unavailable.value)
    assert any(r.message == "wechat_request_signature_refused" for r in caplog.records)


def test_a_bill_download_url_off_our_gateway_is_refused(
    make_wechat_channel,
    impostor: Impostor,
    served_sandbox: ServedSandbox,
) -> None:
    # Validly signed (the impostor holds the platform key) but pointing our
    # signed download request at another host.
    wechat = make_wechat_channel("public_key", gateway_url=impostor.server.url)
    keys = served_sandbox.sandbox.gateways["wechat"].keys  # type: ignore[attr-defined]
    impostor.key, impostor.serial = keys.public_key_private, keys.public_key_id
    impostor.payload = {
        "hash_type": "SHA1",
        "hash_value": "0" * 40,
        "download_url": "https://elsewhere.example/v3/billdownload/file",
    }
    with pytest.raises(ForgedResponse):
        wechat.download_bill(__import__("datetime").date(2026, 1, 1))


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
def test_a_notification_older_than_five_minutes_is_stale(
    mode: str,
    make_wechat_channel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    wechat = make_wechat_channel(mode)
    headers, body = paid_notification(served_sandbox, wechat, receiver)
    served_sandbox.clock.advance(301)
    with pytest.raises(StaleNotification) as stale:
        wechat.parse_notification(headers, body)
    served_sandbox.clock.advance(-301)
    fresh = wechat.parse_notification(headers, body).payment
    assert fresh is not None
    # Verified and decrypted before it was found stale: the refusal names the order.
    assert stale.value.out_trade_no == fresh.out_trade_no


def test_a_notification_accepted_once_is_a_duplicate_after(
    make_wechat_channel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
    session,
) -> None:
    wechat = make_wechat_channel()
    headers, body = paid_notification(served_sandbox, wechat, receiver)
    first = wechat.parse_notification(headers, body)
    assert remember_accepted(
        session,
        "wechat",
        first.notification_id,
        first.payment.out_trade_no if first.payment else None,
    )
    with pytest.raises(DuplicateNotification):
        wechat.parse_notification(headers, body)


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
def test_a_notification_with_one_byte_changed_is_refused(
    mode: str,
    make_wechat_channel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    wechat = make_wechat_channel(mode)
    headers, body = paid_notification(served_sandbox, wechat, receiver)
    tampered = body.replace(b'"summary":"', b'"summary":"!', 1)
    with pytest.raises(BadNotificationSignature):
        wechat.parse_notification(headers, tampered)
    unsigned = {k: v for k, v in headers.items() if k != "Wechatpay-Signature"}
    with pytest.raises(BadNotificationSignature):
        wechat.parse_notification(unsigned, body)


def test_a_notification_does_not_decrypt_with_another_apiv3_key(
    make_wechat_channel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    wechat = make_wechat_channel()
    headers, body = paid_notification(served_sandbox, wechat, receiver)
    stranger = WechatChannel(
        dataclasses.replace(wechat.config, apiv3_key="k" * 32),
        now=served_sandbox.clock.now,
    )
    with pytest.raises(MalformedNotification):
        stranger.parse_notification(headers, body)
    assert wechat.parse_notification(headers, body).payment is not None


def test_a_corrupted_bill_download_fails_its_hash(
    make_wechat_channel,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    wechat = make_wechat_channel()
    day = _paid_day(wechat, served_sandbox, receiver)
    served_sandbox.sandbox.faults.set("wechat", "bill_download", "corrupt")
    with pytest.raises(DamagedBill):
        wechat.download_bill(day)
    served_sandbox.sandbox.faults.set("wechat", "bill_download", "truncate")
    with pytest.raises(DamagedBill):
        wechat.download_bill(day)
    served_sandbox.sandbox.faults.clear("wechat")
    assert wechat.download_bill(day).content


def _paid_day(wechat: WechatChannel, served: ServedSandbox, receiver: Receiver):
    import datetime as dt

    code = served.sandbox.gateways["wechat"].current_code("demo-1")
    paid = wechat.pay_with_code(order_for(receiver), code)
    assert paid.state == TradeState.SUCCEEDED and paid.paid_at is not None
    day = paid.paid_at.date()
    served.clock.set(
        dt.datetime.combine(
            day + dt.timedelta(days=1), dt.time(11), paid.paid_at.tzinfo
        )
    )
    return day


def test_production_refuses_the_sandbox_keys(
    sandbox_instance: Path,
    served_sandbox: ServedSandbox,
) -> None:
    folder = sandbox_instance / "sandbox" / "wechat"
    keys = served_sandbox.sandbox.gateways["wechat"].keys  # type: ignore[attr-defined]
    production = Settings(
        mode="production",
        channels="live",
        instance_path=sandbox_instance,
        database_url="postgresql+psycopg://db/campus",
        secret_key="x" * 40,
        dev_signin=False,
    )
    environ = {
        "CAMPUS_WECHAT_MCHID": "1600000001",
        "CAMPUS_WECHAT_APPID": "wx0000000000000001",
        "CAMPUS_WECHAT_APP_SECRET": "s",
        "CAMPUS_WECHAT_MERCHANT_SERIAL": keys.merchant_serial,
        "CAMPUS_WECHAT_PRIVATE_KEY_FILE": str(folder / "apiclient_key.pem"),
        "CAMPUS_WECHAT_APIV3_KEY": keys.apiv3_key,
        "CAMPUS_WECHAT_PUBLIC_KEY_FILE": str(folder / "pub_key.pem"),
        "CAMPUS_WECHAT_PUBLIC_KEY_ID": keys.public_key_id,
    }
    with pytest.raises(ChannelNotConfigured, match="sandbox's key"):
        WechatConfig.from_settings(production, environ)
    with pytest.raises(ChannelNotConfigured, match="CAMPUS_WECHAT_MCHID"):
        WechatConfig.from_settings(
            dataclasses.replace(production, mode="development"), {}
        )


def test_the_embedded_default_reads_the_sandbox_keys_and_address(
    sandbox_instance: Path, served_sandbox: ServedSandbox
) -> None:
    keys = served_sandbox.sandbox.gateways["wechat"].keys  # type: ignore[attr-defined]
    settings = Settings(instance_path=sandbox_instance, base_url="http://campus.test/")
    config = WechatConfig.from_settings(settings, {})
    assert config.sandbox and config.platform_mode == "public_key"
    assert config.gateway_url == "http://campus.test/sandbox/wechat"
    assert config.mchid == keys.mchid and config.apiv3_key == keys.apiv3_key
    assert config.merchant_serial == keys.merchant_serial
    assert config.public_key_id == keys.public_key_id
    assert "apiv3_key" not in repr(config) and keys.apiv3_key not in repr(config)


def test_from_app_takes_the_app_settings_and_the_environment(
    app, monkeypatch: pytest.MonkeyPatch, served_sandbox: ServedSandbox
) -> None:
    # As a live deployment is configured: every value from CAMPUS_WECHAT_*.
    keys = served_sandbox.sandbox.gateways["wechat"].keys  # type: ignore[attr-defined]
    for name, value in {
        "MCHID": keys.mchid,
        "APPID": keys.appid,
        "APP_SECRET": keys.app_secret,
        "MERCHANT_SERIAL": keys.merchant_serial,
        "PRIVATE_KEY_FILE": str(keys.folder / "apiclient_key.pem"),
        "APIV3_KEY_FILE": str(keys.folder / "apiv3_key.txt"),
        "PUBLIC_KEY_FILE": str(keys.folder / "pub_key.pem"),
        "PUBLIC_KEY_ID": keys.public_key_id,
        "GATEWAY_URL": served_sandbox.gateway_url("wechat") + "/",
        "TIMEOUT": "3",
    }.items():
        monkeypatch.setenv("CAMPUS_WECHAT_" + name, value)
    wechat = WechatChannel.from_app(app, now=served_sandbox.clock.now)
    assert wechat.config.gateway_url == served_sandbox.gateway_url("wechat")
    assert wechat.config.timeout_seconds == 3.0
    order = OrderRequest(
        "A" + uuid.uuid4().hex[:20], 100, "配置 config", "http://127.0.0.1:9/n"
    )
    assert wechat.create_order(order, PayerContext(PayerKind.NATIVE)).qr_content
