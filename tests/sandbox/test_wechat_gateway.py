"""The sandbox WeChat Pay gateway against the published rules, with requests built
and checked by hand (cryptography and requests, not wechatpayv3), so that our
adapter and the gateway cannot agree on a mistake."""

# The shared sandbox fixtures are imported by name, so each test's parameter of
# the same name looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import time
import uuid
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.wechat.keys import WechatKeys
from tests.sandbox.conftest import (  # noqa: F401 (fixtures)
    ServedSandbox,
    _served,
    sandbox_instance,
    served_sandbox,
)


def keys_of(served: ServedSandbox) -> WechatKeys:
    return served.sandbox.gateways["wechat"].keys  # type: ignore[attr-defined]


def call(
    served: ServedSandbox,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    key: rsa.RSAPrivateKey | None = None,
    serial: str | None = None,
    stamp: int | None = None,
    sign_body: str | None = None,
    sign_path: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """A v3 request signed as the rules say: RSA-SHA256 over method, path with
    query, timestamp, nonce and body, each followed by a newline."""
    keys = keys_of(served)
    text = json.dumps(body) if body is not None else ""
    stamp = int(time.time()) if stamp is None else stamp
    nonce = uuid.uuid4().hex.upper()
    signed_body = sign_body if sign_body is not None else text
    message = f"{method}\n{sign_path or path}\n{stamp}\n{nonce}\n{signed_body}\n"
    signature = base64.b64encode(
        (key or keys.merchant_key).sign(
            message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    ).decode()
    authorization = (
        f'WECHATPAY2-SHA256-RSA2048 mchid="{keys.mchid}",nonce_str="{nonce}",'
        f'signature="{signature}",timestamp="{stamp}",'
        f'serial_no="{serial or keys.merchant_serial}"'
    )
    return requests.request(
        method,
        served.gateway_url("wechat") + path,
        data=text.encode() if body is not None else None,
        headers={
            "Authorization": authorization,
            "Content-Type": "application/json",
            "Accept": "application/json",
            **(headers or {}),
        },
        timeout=10,
    )


def verify_answer(response: requests.Response, public_key: Any) -> bool:
    message = (
        f"{response.headers['Wechatpay-Timestamp']}\n"
        f"{response.headers['Wechatpay-Nonce']}\n{response.text}\n"
    )
    try:
        public_key.verify(
            base64.b64decode(response.headers["Wechatpay-Signature"]),
            message.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except Exception:
        return False
    return True


def native_body(served: ServedSandbox, total: int = 100) -> dict[str, Any]:
    keys = keys_of(served)
    return {
        "appid": keys.appid,
        "mchid": keys.mchid,
        "description": "手工 by hand",
        "out_trade_no": "H" + uuid.uuid4().hex[:20],
        "notify_url": "http://127.0.0.1:9/notify",
        "amount": {"total": total},
    }


def test_a_request_signed_by_the_rules_is_answered_and_the_answer_is_signed(
    served_sandbox: ServedSandbox,
) -> None:
    keys = keys_of(served_sandbox)
    answer = call(
        served_sandbox,
        "POST",
        "/v3/pay/transactions/native",
        native_body(served_sandbox),
    )
    assert answer.status_code == 200
    assert answer.json()["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    assert answer.headers["Wechatpay-Serial"] == keys.public_key_id
    assert answer.headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
    assert verify_answer(answer, keys.public_key_private.public_key())


def test_in_certificate_mode_answers_are_signed_by_the_active_certificate(
    served_sandbox: ServedSandbox,
) -> None:
    keys = keys_of(served_sandbox)
    gateway = served_sandbox.sandbox.gateways["wechat"]
    old, new = keys.platform_certificates
    for platform in (old, new):
        gateway.configure(
            platform_mode="certificate",  # type: ignore[attr-defined]
            signing_serial=platform.serial,
        )
        answer = call(
            served_sandbox,
            "GET",
            "/v3/pay/transactions/out-trade-no/none?mchid=" + keys.mchid,
        )
        assert answer.status_code == 404
        assert answer.headers["Wechatpay-Serial"] == platform.serial
        assert verify_answer(answer, platform.certificate.public_key())


@pytest.mark.parametrize(
    "spoil",
    [
        "other_key",
        "stale",
        "future",
        "body_changed",
        "unknown_serial",
        "no_header",
        "wrong_scheme",
    ],
)
def test_a_request_not_signed_by_the_rules_is_refused_401_sign_error(
    spoil: str,
    served_sandbox: ServedSandbox,
) -> None:
    body = native_body(served_sandbox)
    options: dict[str, Any] = {}
    if spoil == "other_key":
        options["key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if spoil == "stale":
        options["stamp"] = int(time.time()) - 301
    if spoil == "future":
        options["stamp"] = int(time.time()) + 301
    if spoil == "body_changed":
        options["sign_body"] = json.dumps(dict(body, amount={"total": 1}))
    if spoil == "unknown_serial":
        options["serial"] = "1234567890ABCDEF"
    if spoil == "no_header":
        answer = requests.post(
            served_sandbox.gateway_url("wechat") + "/v3/pay/transactions/native",
            json=body,
            timeout=10,
        )
    elif spoil == "wrong_scheme":
        answer = call(
            served_sandbox,
            "POST",
            "/v3/pay/transactions/native",
            body,
            headers={"Authorization": 'WECHATPAY2-SHA256-RSA1024 mchid="1"'},
        )
    else:
        answer = call(
            served_sandbox, "POST", "/v3/pay/transactions/native", body, **options
        )
    assert answer.status_code == 401
    assert answer.json()["code"] == "SIGN_ERROR"
    assert answer.json()["message"]


@pytest.mark.parametrize(
    ("answer_to", "status", "code"),
    [
        ("unknown_order", 404, "ORDER_NOT_EXIST"),
        ("unknown_path", 404, "NOT_FOUND"),
        ("wrong_method", 405, "INVALID_REQUEST"),
        ("not_json", 400, "PARAM_ERROR"),
        ("bad_signature", 401, "SIGN_ERROR"),
        ("system_error", 500, "SYSTEM_ERROR"),
    ],
)
def test_error_answers_are_signed_like_any_other(
    answer_to: str, status: int, code: str, served_sandbox: ServedSandbox
) -> None:
    # The real API signs its error answers too; an adapter that verifies them must
    # find a signature here, or it would learn to believe unsigned ones.
    keys = keys_of(served_sandbox)
    if answer_to == "unknown_order":
        answer = call(
            served_sandbox,
            "GET",
            "/v3/pay/transactions/out-trade-no/none?mchid=" + keys.mchid,
        )
    elif answer_to == "unknown_path":
        answer = call(served_sandbox, "GET", "/v3/no/such/thing")
    elif answer_to == "wrong_method":
        answer = call(served_sandbox, "DELETE", "/v3/pay/transactions/native")
    elif answer_to == "not_json":
        answer = call(
            served_sandbox,
            "POST",
            "/v3/pay/transactions/native",
            native_body(served_sandbox),
            headers={"Content-Type": "text/plain"},
        )
    elif answer_to == "bad_signature":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        answer = call(
            served_sandbox,
            "POST",
            "/v3/pay/transactions/native",
            native_body(served_sandbox),
            key=other,
        )
    else:
        served_sandbox.sandbox.faults.set("wechat", "system_error", True)
        answer = call(
            served_sandbox,
            "POST",
            "/v3/pay/transactions/native",
            native_body(served_sandbox),
        )

    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.headers["Wechatpay-Serial"] == keys.public_key_id
    assert verify_answer(answer, keys.public_key_private.public_key())


def test_query_string_is_part_of_what_is_signed(served_sandbox: ServedSandbox) -> None:
    keys = keys_of(served_sandbox)
    path = "/v3/pay/transactions/out-trade-no/none?mchid=" + keys.mchid
    answer = call(served_sandbox, "GET", path)
    assert answer.status_code == 404 and answer.json()["code"] == "ORDER_NOT_EXIST"
    without_query = call(served_sandbox, "GET", path, sign_path=path.split("?")[0])
    assert without_query.status_code == 401


def test_platform_certificates_are_served_sealed_under_the_apiv3_key(
    served_sandbox: ServedSandbox,
) -> None:
    keys = keys_of(served_sandbox)
    answer = call(served_sandbox, "GET", "/v3/certificates")
    assert answer.status_code == 200
    served = answer.json()["data"]
    assert [entry["serial_no"] for entry in served] == [
        p.serial for p in keys.platform_certificates
    ]
    now = dt.datetime.now(dt.UTC)
    for entry in served:
        sealed = entry["encrypt_certificate"]
        assert sealed["algorithm"] == "AEAD_AES_256_GCM"
        assert sealed["associated_data"] == "certificate"
        pem = AESGCM(keys.apiv3_key.encode()).decrypt(
            sealed["nonce"].encode(),
            base64.b64decode(sealed["ciphertext"]),
            b"certificate",
        )
        certificate = x509.load_pem_x509_certificate(pem)
        assert format(certificate.serial_number, "X") == entry["serial_no"]
        assert (
            certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
        )
        assert dt.datetime.fromisoformat(
            entry["expire_time"]
        ).utcoffset() == dt.timedelta(hours=8)
        with pytest.raises(InvalidTag):
            AESGCM(b"w" * 32).decrypt(
                sealed["nonce"].encode(),
                base64.b64decode(sealed["ciphertext"]),
                b"certificate",
            )
    # Two valid at once: the rotation window.
    assert len(served) == 2


def test_trade_bill_is_back_quoted_yuan_with_a_summary_and_its_sha1(
    served_sandbox: ServedSandbox,
) -> None:
    keys = keys_of(served_sandbox)
    gateway = served_sandbox.sandbox.gateways["wechat"]
    out_trade_no = "B" + uuid.uuid4().hex[:20]
    codepay = dict(
        native_body(served_sandbox, 1234),
        out_trade_no=out_trade_no,
        payer={"auth_code": gateway.current_code("demo-1")},
    )
    del codepay["notify_url"]
    paid = call(served_sandbox, "POST", "/v3/pay/transactions/codepay", codepay)
    assert paid.status_code == 200 and paid.json()["trade_state"] == "SUCCESS"
    reversed_ = call(
        served_sandbox,
        "POST",
        f"/v3/pay/transactions/out-trade-no/{out_trade_no}/reverse",
        {"appid": keys.appid, "mchid": keys.mchid},
    )
    assert reversed_.status_code == 200
    day = dt.datetime.fromisoformat(paid.json()["success_time"]).date()
    served_sandbox.clock.set(
        dt.datetime.combine(
            day + dt.timedelta(days=1),
            dt.time(10, 1),
            dt.timezone(dt.timedelta(hours=8)),
        )
    )

    for tar_type in ("", "&tar_type=GZIP"):
        asked = call(
            served_sandbox,
            "GET",
            f"/v3/bill/tradebill?bill_date={day}&bill_type=ALL{tar_type}",
        )
        assert asked.status_code == 200
        url = asked.json()["download_url"]
        assert url.startswith(
            served_sandbox.gateway_url("wechat") + "/v3/billdownload/"
        )
        path = url[len(served_sandbox.gateway_url("wechat")) :]
        download = call(served_sandbox, "GET", path)
        assert "Wechatpay-Signature" not in download.headers
        raw = gzip.decompress(download.content) if tar_type else download.content
        assert hashlib.sha1(raw).hexdigest() == asked.json()["hash_value"]
        lines = raw.decode().splitlines()
        assert lines[0].startswith(
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号"
        )
        ours = [line for line in lines if f"`{out_trade_no}," in line]
        assert len(ours) == 1
        cells = ours[0].split(",")
        assert all(cell.startswith("`") for cell in cells)
        assert "`REVOKED" in cells and "`12.34" in cells
        assert lines[-2].startswith("总交易单数,应结订单总金额,退款总金额")
        assert lines[-1].startswith("`")


def test_bill_of_a_day_not_yet_over_does_not_exist(
    served_sandbox: ServedSandbox,
) -> None:
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    answer = call(served_sandbox, "GET", f"/v3/bill/tradebill?bill_date={today}")
    assert answer.status_code == 400
    assert answer.json()["code"] == "NO_STATEMENT_EXIST"


def test_payment_codes_are_18_digits_one_use_and_refresh_every_minute(
    served_sandbox: ServedSandbox,
) -> None:
    gateway = served_sandbox.sandbox.gateways["wechat"]
    code = gateway.current_code("demo-2")
    assert len(code) == 18 and code.isdigit() and 10 <= int(code[:2]) <= 15
    assert gateway.current_code("demo-2") == code
    served_sandbox.clock.advance(61)
    fresh = gateway.current_code("demo-2")
    assert fresh != code
    body = dict(native_body(served_sandbox), payer={"auth_code": code})
    expired = call(served_sandbox, "POST", "/v3/pay/transactions/codepay", body)
    assert expired.status_code == 403 and expired.json()["code"] == "AUTHCODEEXPIRE"


def test_oauth_refuses_a_wrong_secret_and_an_unknown_code(
    served_sandbox: ServedSandbox,
) -> None:
    keys = keys_of(served_sandbox)
    url = served_sandbox.gateway_url("wechat") + "/sns/oauth2/access_token"
    params = {
        "appid": keys.appid,
        "secret": "wrong",
        "code": "x",
        "grant_type": "authorization_code",
    }
    assert requests.get(url, params=params, timeout=10).json()["errcode"] == 40125
    params["secret"] = keys.app_secret
    assert requests.get(url, params=params, timeout=10).json()["errcode"] == 40029
