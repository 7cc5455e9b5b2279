"""The sandbox Alipay against the published open-platform rules, with a client
written here from those rules (not python-alipay-sdk), over real HTTP."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from urllib.parse import parse_qsl

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sandbox.alipay import testing
from sandbox.alipay.bills import DETAIL_COLUMNS, SHANGHAI
from sandbox.alipay.keys import ensure_keys
from sandbox.core import ALIPAY_RETRY_SCHEDULE

alipay_keys = testing.alipay_keys
alipay_sandbox = testing.alipay_sandbox
_alipay_servers = testing._alipay_servers


class RulebookClient:
    """Signs requests and checks answers exactly as the open platform documents:
    all parameters but ``sign``, non-empty, sorted, ``k=v`` joined with ``&``;
    SHA256withRSA; the answer's signature over the raw ``*_response`` JSON."""

    def __init__(self, alipay, private_pem: str | None = None) -> None:
        self.alipay = alipay
        self.keys = alipay.gateway.keys
        self.private = serialization.load_pem_private_key(
            (private_pem or self.keys.app_private_key).encode(), password=None
        )
        self.alipay_public = serialization.load_pem_public_key(
            self.keys.alipay_public_key.encode()
        )

    def params(
        self,
        method: str,
        biz: dict | None = None,
        *,
        sign_type_signed=True,
        **extra: str,
    ) -> dict[str, str]:
        now = self.alipay.sandbox.clock.now().astimezone(SHANGHAI)
        params = {
            "app_id": self.keys.app_id,
            "method": method,
            "charset": "utf-8",
            "sign_type": "RSA2",
            "version": "1.0",
            "timestamp": now.strftime("%Y-%m-%d %H:%M:%S"),
            **extra,
        }
        if biz is not None:
            params["biz_content"] = json.dumps(biz, ensure_ascii=False)
        signed = {
            k: v
            for k, v in params.items()
            if v and (sign_type_signed or k != "sign_type")
        }
        content = "&".join(f"{k}={signed[k]}" for k in sorted(signed))
        signature = self.private.sign(
            content.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        params["sign"] = base64.b64encode(signature).decode()
        return params

    def call(self, method: str, biz: dict | None = None, **options) -> tuple[str, dict]:
        response = requests.post(
            self.alipay.gateway_url, timeout=5, data=self.params(method, biz, **options)
        )
        assert response.status_code == 200
        return response.text, json.loads(response.text)

    def verified(self, raw: str, key: str) -> dict:
        match = re.fullmatch(rf'\{{"{key}":(.*),"sign":"([^"]+)"\}}', raw, re.S)
        assert match, raw
        self.alipay_public.verify(
            base64.b64decode(match[2]),
            match[1].encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        return json.loads(match[1])


@pytest.fixture
def client(alipay_sandbox) -> RulebookClient:
    return RulebookClient(alipay_sandbox)


def pay_biz(alipay, out_trade_no="HAND-1", amount="3.00") -> dict:
    return {
        "out_trade_no": out_trade_no,
        "scene": "bar_code",
        "auth_code": alipay.payer_code(),
        "subject": "豆浆 soy milk",
        "total_amount": amount,
    }


# -- requests ----------


def test_a_request_signed_by_the_rules_is_answered_and_signed(client, alipay_sandbox):
    raw, _ = client.call("alipay.trade.pay", pay_biz(alipay_sandbox))

    answer = client.verified(raw, "alipay_trade_pay_response")

    assert answer["code"] == "10000" and answer["msg"] == "Success"
    assert answer["total_amount"] == "3.00"
    assert re.fullmatch(r"\d{28}", answer["trade_no"])


def test_sign_type_is_part_of_a_requests_signature(client, alipay_sandbox):
    raw, _ = client.call(
        "alipay.trade.query", {"out_trade_no": "X"}, sign_type_signed=False
    )
    assert (
        client.verified(raw, "alipay_trade_query_response")["sub_code"]
        == "isv.invalid-signature"
    )


def test_a_request_signed_with_another_key_gets_the_real_error_shape(
    alipay_sandbox, tmp_path
):
    stranger = ensure_keys(tmp_path / "elsewhere")
    client = RulebookClient(alipay_sandbox, stranger.app_private_key)

    raw, whole = client.call("alipay.trade.query", {"out_trade_no": "X"})
    answer = client.verified(raw, "alipay_trade_query_response")

    assert set(whole) == {"alipay_trade_query_response", "sign"}
    assert answer["code"] == "40002"
    assert answer["msg"] == "Invalid Arguments"
    assert answer["sub_code"] == "isv.invalid-signature"
    assert answer["sub_msg"].startswith("验签出错")


def test_a_request_without_a_signature(client):
    params = client.params("alipay.trade.query", {"out_trade_no": "X"})
    del params["sign"]
    raw = requests.post(client.alipay.gateway_url, data=params, timeout=5).text
    answer = client.verified(raw, "alipay_trade_query_response")
    assert (answer["code"], answer["sub_code"]) == ("40001", "isv.missing-signature")


def test_another_app_id_is_refused(client):
    params = client.params("alipay.trade.query", {"out_trade_no": "X"})
    params["app_id"] = "2021000000000000"
    raw = requests.get(client.alipay.gateway_url, params=params, timeout=5).text
    assert (
        client.verified(raw, "alipay_trade_query_response")["sub_code"]
        == "isv.invalid-app-id"
    )


def test_an_unknown_method_answers_error_response(client):
    raw, whole = client.call("alipay.trade.teleport", {"out_trade_no": "X"})
    assert "error_response" in whole
    assert client.verified(raw, "error_response")["sub_code"] == "isv.invalid-method"


def test_a_stale_timestamp_is_refused(client, alipay_sandbox):
    params = client.params("alipay.trade.query", {"out_trade_no": "X"})
    alipay_sandbox.sandbox.clock.advance(16 * 60)
    raw = requests.post(client.alipay.gateway_url, data=params, timeout=5).text
    assert (
        client.verified(raw, "alipay_trade_query_response")["sub_code"]
        == "isv.invalid-timestamp"
    )


def test_a_wap_redirect_with_a_bad_signature_shows_the_error_page(client):
    params = client.params(
        "alipay.trade.wap.pay",
        {
            "out_trade_no": "W-1",
            "total_amount": "1.00",
            "subject": "x",
            "product_code": "QUICK_WAP_PAY",
        },
    )
    params["sign"] = params["sign"][:-8] + "AAAAAAA="
    page = requests.get(client.alipay.gateway_url, params=params, timeout=5)
    assert "isv.invalid-signature" in page.text
    assert "/pay/" not in page.url


# -- payment codes and payers ----------


def test_payment_codes_look_like_alipays_and_refresh(alipay_sandbox):
    gateway = alipay_sandbox.gateway
    payer = gateway.payers()[0]["id"]

    first = gateway.current_code(payer)
    same = gateway.current_code(payer)
    alipay_sandbox.sandbox.clock.advance(61)
    refreshed = gateway.current_code(payer)

    assert re.fullmatch(r"(2[5-9]|30)\d{14,22}", first)
    assert same == first and refreshed != first


def test_an_expired_code_is_refused(client, alipay_sandbox):
    biz = pay_biz(alipay_sandbox)
    alipay_sandbox.sandbox.clock.advance(121)
    raw, _ = client.call("alipay.trade.pay", biz)
    assert (
        client.verified(raw, "alipay_trade_pay_response")["sub_code"]
        == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    )


def test_the_password_switch_through_the_control_api(client, alipay_sandbox):
    payer = alipay_sandbox.gateway.payers()[0]["id"]
    control = f"{alipay_sandbox.base_url}/sandbox/alipay/control/payers/{payer}"
    shown = requests.post(control, json={"password_seconds": 45}, timeout=5).json()

    raw, _ = client.call(
        "alipay.trade.pay", {**pay_biz(alipay_sandbox), "auth_code": shown["code"]}
    )
    answer = client.verified(raw, "alipay_trade_pay_response")
    alipay_sandbox.sandbox.clock.advance(46)
    raw, _ = client.call("alipay.trade.query", {"out_trade_no": "HAND-1"})

    assert shown["password_seconds"] == 45
    assert answer["code"] == "10003"
    assert (
        client.verified(raw, "alipay_trade_query_response")["trade_status"]
        == "TRADE_SUCCESS"
    )


def test_faults_through_the_control_api(alipay_sandbox):
    url = f"{alipay_sandbox.base_url}/sandbox/alipay/control/faults"
    listed = requests.post(
        url, timeout=5, json={"name": "latency_ms", "value": 5, "out_trade_no": "F-1"}
    ).json()
    cleared = requests.delete(url, timeout=5).json()

    assert listed == [
        {"channel": "alipay", "order": "F-1", "name": "latency_ms", "value": 5}
    ]
    assert cleared == []


def test_the_payer_page_is_phone_sized_chinese_first(client, alipay_sandbox):
    raw, _ = client.call(
        "alipay.trade.precreate",
        {"out_trade_no": "Q-1", "total_amount": "8.00", "subject": "午餐"},
    )
    qr = client.verified(raw, "alipay_trade_precreate_response")["qr_code"]

    page = requests.get(qr, timeout=5).text

    assert 'name="viewport"' in page and "max-width: 420px" in page
    assert page.index("确认付款") < page.index("Pay<")
    assert page.index("取消") < page.index("Cancel")
    assert "¥8.00" in page


# -- notifications ----------


def notification_params(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def verifies(client, params: dict[str, str], *, leave_out: tuple[str, ...]) -> bool:
    content = "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in leave_out)
    try:
        client.alipay_public.verify(
            base64.b64decode(params["sign"]),
            content.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


def test_notifications_are_signed_without_sign_and_sign_type(client, alipay_sandbox):
    client.call(
        "alipay.trade.pay",
        pay_biz(alipay_sandbox),
        notify_url=alipay_sandbox.notify_url,
    )
    alipay_sandbox.sandbox.outbox.deliver_due()
    [body] = alipay_sandbox.receiver.received
    params = notification_params(body)

    assert params["notify_type"] == "trade_status_sync"
    assert params["trade_status"] == "TRADE_SUCCESS"
    assert params["total_amount"] == "3.00"
    assert verifies(client, params, leave_out=("sign", "sign_type"))
    assert not verifies(client, params, leave_out=("sign",))


def test_retries_follow_alipays_schedule_until_success(client, alipay_sandbox):
    receiver, clock = alipay_sandbox.receiver, alipay_sandbox.sandbox.clock
    outbox = alipay_sandbox.sandbox.outbox
    # Not "success": an error status, a 200 saying something else, shouting.
    receiver.answers = [(500, "error"), (200, "ok"), (200, "SUCCESS")] + [
        (200, "fail")
    ] * 10
    client.call(
        "alipay.trade.pay",
        pay_biz(alipay_sandbox),
        notify_url=alipay_sandbox.notify_url,
    )

    outbox.deliver_due()
    for wait in ALIPAY_RETRY_SCHEDULE:
        sent = len(receiver.received)
        clock.advance(wait - 1)
        outbox.deliver_due()
        assert len(receiver.received) == sent  # not a second early
        clock.advance(1)
        outbox.deliver_due()
        assert len(receiver.received) == sent + 1

    [delivery] = outbox.all()
    stamps = [notification_params(body)["notify_time"] for body in receiver.received]
    assert len(receiver.received) == 1 + len(ALIPAY_RETRY_SCHEDULE) == 8
    assert delivery.gave_up
    assert len(set(stamps)) == 8  # each attempt stamped when sent, and re-signed
    assert len({notification_params(b)["notify_id"] for b in receiver.received}) == 1
    assert all(
        verifies(client, notification_params(body), leave_out=("sign", "sign_type"))
        for body in receiver.received
    )


def test_a_notification_answered_success_is_not_sent_again(client, alipay_sandbox):
    alipay_sandbox.receiver.answers = [(200, "fail"), (200, "success")]
    client.call(
        "alipay.trade.pay",
        pay_biz(alipay_sandbox),
        notify_url=alipay_sandbox.notify_url,
    )
    outbox, clock = alipay_sandbox.sandbox.outbox, alipay_sandbox.sandbox.clock

    outbox.deliver_due()
    clock.advance(ALIPAY_RETRY_SCHEDULE[0])
    accepted = outbox.deliver_due()
    clock.advance(86400)
    outbox.deliver_due()

    assert accepted == 1
    assert len(alipay_sandbox.receiver.received) == 2
    assert outbox.all()[0].done and not outbox.all()[0].gave_up


# -- bills ----------


def test_the_bill_zip_is_alipays_format(client, alipay_sandbox):
    client.call("alipay.trade.pay", pay_biz(alipay_sandbox))
    client.call(
        "alipay.trade.refund",
        {
            "out_trade_no": "HAND-1",
            "refund_amount": "1.00",
            "out_request_no": "HAND-1-R",
        },
    )
    day = alipay_sandbox.sandbox.clock.now().astimezone(SHANGHAI).date()
    alipay_sandbox.sandbox.clock.advance(86400)

    raw, _ = client.call(
        "alipay.data.dataservice.bill.downloadurl.query",
        {"bill_type": "trade", "bill_date": day.isoformat()},
    )
    url = client.verified(
        raw, "alipay_data_dataservice_bill_downloadurl_query_response"
    )["bill_download_url"]
    archive = zipfile.ZipFile(io.BytesIO(requests.get(url, timeout=5).content))
    infos = archive.infolist()
    names = [info.filename.encode("cp437").decode("gbk") for info in infos]
    detail = archive.read(infos[0]).decode("gbk").splitlines()

    assert all(not info.flag_bits & 0x800 for info in infos)  # GBK, no UTF-8 flag
    assert names[0].endswith(f"_{day:%Y%m%d}_业务明细.csv")
    assert names[1].endswith(f"_{day:%Y%m%d}_业务明细(汇总).csv")
    assert detail[0] == "#支付宝业务明细查询"
    header = detail.index(",".join(DETAIL_COLUMNS))
    trade, refund = detail[header + 1], detail[header + 2]
    assert trade.split(",")[2] == "交易\t" and refund.split(",")[2] == "退款\t"
    assert all(value.endswith("\t") for value in trade.split(","))
    assert refund.split(",")[11] == "-1.00\t"
    assert "#交易合计：1笔，退款合计：1笔" in detail


def test_no_bill_before_the_day_is_over(client, alipay_sandbox):
    today = alipay_sandbox.sandbox.clock.now().astimezone(SHANGHAI).date()
    raw, _ = client.call(
        "alipay.data.dataservice.bill.downloadurl.query",
        {"bill_type": "trade", "bill_date": today.isoformat()},
    )
    key = "alipay_data_dataservice_bill_downloadurl_query_response"
    assert client.verified(raw, key)["sub_code"] == "isp.bill_not_exist"


def test_demo_payers_share_the_sandbox_ids(alipay_sandbox):
    gateway = alipay_sandbox.gateway
    payers = gateway.payers()

    gateway.set_password_needed("demo-2", 10)

    assert [payer["id"] for payer in payers] == ["demo-1", "demo-2", "demo-3"]
    assert all(re.fullmatch(r"2088\d{12}", payer["user_id"]) for payer in payers)
    assert gateway.payers()[1]["password_seconds"] == 10
    assert gateway.current_code("demo-1") == gateway.current_code(payers[0]["user_id"])
    with pytest.raises(KeyError):
        gateway.current_code("nobody")


def test_a_held_notification_is_released_through_the_control_api(
    client, alipay_sandbox
):
    alipay_sandbox.sandbox.faults.set("alipay", "notification", "reorder")
    client.call(
        "alipay.trade.pay",
        pay_biz(alipay_sandbox),
        notify_url=alipay_sandbox.notify_url,
    )
    base = f"{alipay_sandbox.base_url}/sandbox/alipay/control"

    held = alipay_sandbox.sandbox.outbox.all()
    released = requests.post(f"{base}/notifications/release", timeout=5).json()
    trade = requests.get(f"{base}/trades/HAND-1", timeout=5).json()

    assert held == []
    assert released == {"released": 1}
    assert len(alipay_sandbox.sandbox.outbox.all()) == 1
    assert (trade["status"], trade["total_fen"]) == ("TRADE_SUCCESS", 300)
