"""Notifications as WeChat Pay sends them: sealed under the APIv3 key, signed by
the platform key of the merchant's mode, re-signed on every attempt, and retried
on the official schedule until a 2xx, with the sandbox clock moved instead of
waiting."""

# The shared sandbox fixtures are imported by name, so each test's parameter of
# the same name looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.core import WECHAT_RETRY_SCHEDULE
from tests.sandbox.conftest import (  # noqa: F401 (fixtures)
    Receiver,
    ServedSandbox,
    _receiver,
    _served,
    receiver,
    sandbox_instance,
    served_sandbox,
)
from tests.sandbox.test_wechat_gateway import call, keys_of


def paid_order(served: ServedSandbox, receiver: Receiver) -> str:
    keys = keys_of(served)
    out_trade_no = "N" + uuid.uuid4().hex[:20]
    answer = call(
        served,
        "POST",
        "/v3/pay/transactions/native",
        {
            "appid": keys.appid,
            "mchid": keys.mchid,
            "description": "通知 notify",
            "out_trade_no": out_trade_no,
            "notify_url": receiver.url("/pay"),
            "amount": {"total": 321},
        },
    )
    prepay_id = answer.json()["code_url"].rsplit("pr=", 1)[1]
    assert served.pay(prepay_id).status_code == 200
    return out_trade_no


def signature_verifies(headers: dict[str, str], body: bytes, public_key) -> bool:  # type: ignore[no-untyped-def]
    message = (
        f"{headers['Wechatpay-Timestamp']}\n{headers['Wechatpay-Nonce']}\n"
        f"{body.decode()}\n"
    )
    try:
        public_key.verify(
            base64.b64decode(headers["Wechatpay-Signature"]),
            message.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except Exception:
        return False
    return True


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
def test_notification_is_signed_and_decrypts_only_with_the_apiv3_key(
    mode: str,
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    keys = keys_of(served_sandbox)
    served_sandbox.sandbox.gateways["wechat"].configure(platform_mode=mode)  # type: ignore[attr-defined]
    out_trade_no = paid_order(served_sandbox, receiver)
    assert served_sandbox.deliver() == 1
    notice = receiver.received[-1]
    signer = (
        keys.public_key_private.public_key()
        if mode == "public_key"
        else keys.platform_certificates[-1].certificate.public_key()
    )
    expected_serial = (
        keys.public_key_id
        if mode == "public_key"
        else keys.platform_certificates[-1].serial
    )
    assert notice.headers["Wechatpay-Serial"] == expected_serial
    assert signature_verifies(notice.headers, notice.body, signer)

    event = json.loads(notice.body)
    assert event["resource_type"] == "encrypt-resource"
    assert event["event_type"] == "TRANSACTION.SUCCESS"
    sealed = event["resource"]
    assert sealed["algorithm"] == "AEAD_AES_256_GCM"
    assert sealed["original_type"] == "transaction"
    plain = AESGCM(keys.apiv3_key.encode()).decrypt(
        sealed["nonce"].encode(),
        base64.b64decode(sealed["ciphertext"]),
        sealed["associated_data"].encode(),
    )
    resource = json.loads(plain)
    assert resource["out_trade_no"] == out_trade_no
    assert resource["trade_state"] == "SUCCESS"
    assert resource["amount"]["total"] == 321
    with pytest.raises(InvalidTag):
        AESGCM(b"0" * 32).decrypt(
            sealed["nonce"].encode(),
            base64.b64decode(sealed["ciphertext"]),
            sealed["associated_data"].encode(),
        )


def test_retries_follow_the_official_schedule_until_a_2xx(
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    keys = keys_of(served_sandbox)
    receiver.answers = [(500, b'{"code":"FAIL"}'), (404, b""), (503, b"")]
    paid_order(served_sandbox, receiver)
    clock = served_sandbox.clock

    assert served_sandbox.deliver() == 0  # attempt 1 at once: 500
    clock.advance(WECHAT_RETRY_SCHEDULE[0] - 1)
    assert served_sandbox.deliver() == 0 and len(receiver.received) == 1
    clock.advance(1)
    assert served_sandbox.deliver() == 0  # attempt 2 after 15 s: 404
    clock.advance(WECHAT_RETRY_SCHEDULE[1])
    assert served_sandbox.deliver() == 0  # attempt 3 after 15 s more: 503
    clock.advance(WECHAT_RETRY_SCHEDULE[2] - 1)
    assert served_sandbox.deliver() == 0 and len(receiver.received) == 3
    clock.advance(1)
    assert served_sandbox.deliver() == 1  # attempt 4 after 30 s: 204 accepted
    assert len(receiver.received) == 4
    clock.advance(86400)
    assert served_sandbox.deliver() == 0 and len(receiver.received) == 4

    # Each attempt was signed when it was sent: fresh timestamps, all valid.
    stamps = [int(r.headers["Wechatpay-Timestamp"]) for r in receiver.received]
    assert stamps[1] - stamps[0] >= 15 and stamps[3] - stamps[2] >= 30
    assert len({r.headers["Wechatpay-Nonce"] for r in receiver.received}) == 4
    assert len({r.body for r in receiver.received}) == 1
    public_key = keys.public_key_private.public_key()
    assert all(
        signature_verifies(r.headers, r.body, public_key) for r in receiver.received
    )


def test_retries_give_up_after_the_last_step_of_the_schedule(
    served_sandbox: ServedSandbox,
    receiver: Receiver,
) -> None:
    receiver.default = (500, b"")
    out_trade_no = paid_order(served_sandbox, receiver)
    served_sandbox.deliver()
    for wait in WECHAT_RETRY_SCHEDULE:
        served_sandbox.clock.advance(wait)
        served_sandbox.deliver()
    assert len(receiver.received) == len(WECHAT_RETRY_SCHEDULE) + 1
    [delivery] = [
        d for d in served_sandbox.sandbox.outbox.all() if d.out_trade_no == out_trade_no
    ]
    assert delivery.gave_up
    served_sandbox.clock.advance(86400)
    served_sandbox.deliver()
    assert len(receiver.received) == len(WECHAT_RETRY_SCHEDULE) + 1
