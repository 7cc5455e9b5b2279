"""The sandbox's own pages and JSON control API, over HTTP."""

# The shared sandbox fixtures are imported by name, so each test's parameter of
# the same name looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt

import requests

from sandbox.control import start_delivery_thread
from tests.sandbox.conftest import (  # noqa: F401 (fixtures)
    Receiver,
    ServedSandbox,
    _receiver,
    _served,
    receiver,
    sandbox_instance,
    served_sandbox,
)


def test_payer_page_shows_the_current_code_as_text_and_qr(
    served_sandbox: ServedSandbox,
) -> None:
    code = served_sandbox.sandbox.gateways["wechat"].current_code("demo-1")
    page = requests.get(f"{served_sandbox.url}/payer/demo-1", timeout=10)
    assert page.status_code == 200
    assert code in page.text and "<svg" in page.text
    assert "张三" in page.text and "Zhang San" in page.text
    assert (
        requests.get(f"{served_sandbox.url}/payer/nobody", timeout=10).status_code
        == 404
    )


def test_password_switch_from_the_page_makes_the_next_payment_wait(
    served_sandbox: ServedSandbox,
) -> None:
    answer = requests.post(
        f"{served_sandbox.url}/payer/demo-2/password",
        data={"gateway": "wechat", "seconds": "30"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302
    payers = {p["id"]: p for p in served_sandbox.sandbox.gateways["wechat"].payers()}
    assert payers["demo-2"]["password_seconds"] == 30
    requests.post(
        f"{served_sandbox.url}/api/payers/demo-2/password",
        json={"channel": "wechat", "seconds": 0},
        timeout=10,
    )
    payers = {p["id"]: p for p in served_sandbox.sandbox.gateways["wechat"].payers()}
    assert payers["demo-2"]["password_seconds"] == 0


def test_clock_api_advances_sets_and_resets(served_sandbox: ServedSandbox) -> None:
    api = f"{served_sandbox.url}/api/clock"
    before = served_sandbox.clock.now()
    moved = requests.post(f"{api}/advance", json={"seconds": 3600}, timeout=10).json()
    assert dt.datetime.fromisoformat(moved["now"]) - before >= dt.timedelta(hours=1)
    target = dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC)
    requests.post(f"{api}/set", json={"at": target.isoformat()}, timeout=10)
    assert abs(served_sandbox.clock.now() - target) < dt.timedelta(seconds=5)
    assert (
        requests.post(
            f"{api}/set", json={"at": "2030-01-01T09:00"}, timeout=10
        ).status_code
        == 400
    )
    requests.post(f"{api}/reset", timeout=10)
    assert abs(served_sandbox.clock.now() - dt.datetime.now(dt.UTC)) < dt.timedelta(
        seconds=5
    )


def test_fault_api_sets_lists_and_clears_switches(
    served_sandbox: ServedSandbox,
) -> None:
    api = f"{served_sandbox.url}/api/faults"
    listed = requests.post(
        api,
        json={"channel": "wechat", "name": "latency_ms", "value": 50, "order": "X1"},
        timeout=10,
    ).json()
    assert {
        "channel": "wechat",
        "order": "X1",
        "name": "latency_ms",
        "value": 50,
    } in listed["switches"]
    assert served_sandbox.sandbox.faults.get("wechat", "latency_ms", "X1") == 50
    names = requests.get(api, timeout=10).json()["names"]
    assert "user_paying_seconds" in names["wechat"]
    assert (
        requests.post(
            api, json={"channel": "nowhere", "name": "x"}, timeout=10
        ).status_code
        == 400
    )
    requests.delete(api, params={"channel": "wechat"}, timeout=10)
    assert served_sandbox.sandbox.faults.get("wechat", "latency_ms", "X1") is None


def test_gateway_settings_api_switches_the_signing_mode(
    served_sandbox: ServedSandbox,
) -> None:
    api = f"{served_sandbox.url}/api/gateways/wechat/settings"
    settings = requests.post(
        api, json={"platform_mode": "certificate"}, timeout=10
    ).json()
    assert settings["platform_mode"] == "certificate"
    assert settings["public_key_id"].startswith("PUB_KEY_ID_")
    assert (
        requests.post(api, json={"platform_mode": "x"}, timeout=10).status_code == 400
    )


def test_home_lists_payers_and_open_orders(served_sandbox: ServedSandbox) -> None:
    page = requests.get(served_sandbox.url + "/", timeout=10)
    assert page.status_code == 200 and "李四" in page.text
    outbox = requests.post(f"{served_sandbox.url}/api/outbox/deliver", timeout=10)
    assert outbox.json() == {"accepted": 0}


def test_the_delivery_thread_sends_due_notifications_by_itself(
    served_sandbox: ServedSandbox, receiver: Receiver
) -> None:
    from tests.sandbox.test_wechat_notifications import paid_order

    stop = start_delivery_thread(served_sandbox.sandbox, interval=0.05)
    try:
        paid_order(served_sandbox, receiver)
        # A background thread: wait for its work (bounded), not for the clock.
        for _ in range(100):
            if receiver.received or stop.wait(0.05):
                break
    finally:
        stop.set()
    assert len(receiver.received) == 1


def test_home_page_forms_switch_faults_and_move_the_clock(
    served_sandbox: ServedSandbox,
) -> None:
    home = served_sandbox.url
    requests.post(
        f"{home}/faults",
        data={
            "channel": "wechat",
            "name": "user_paying_seconds",
            "value": "30",
            "order": "P1",
            "action": "set",
        },
        timeout=10,
    )
    assert (
        served_sandbox.sandbox.faults.get("wechat", "user_paying_seconds", "P1") == 30
    )
    requests.post(
        f"{home}/faults",
        data={
            "channel": "wechat",
            "name": "system_error",
            "value": "",
            "action": "set",
        },
        timeout=10,
    )
    assert served_sandbox.sandbox.faults.get("wechat", "system_error") is True
    page = requests.get(home + "/", timeout=10).text
    assert "user_paying_seconds" in page and "P1" in page
    requests.post(
        f"{home}/faults", data={"channel": "wechat", "action": "clear"}, timeout=10
    )
    assert served_sandbox.sandbox.faults.snapshot() == []

    before = served_sandbox.clock.now()
    requests.post(
        f"{home}/clock", data={"seconds": "600", "action": "advance"}, timeout=10
    )
    assert served_sandbox.clock.now() - before >= dt.timedelta(minutes=10)
