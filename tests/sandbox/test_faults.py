"""Fault switches outlive the process that set them: a switch set by
``flask demo traffic`` or a running server's control page holds when
``flask reconcile nightly`` asks the gateway for a bill in another process."""

from __future__ import annotations

import pytest

from sandbox.core import Faults


def test_a_switch_set_in_one_process_is_seen_by_another(tmp_path):
    path = tmp_path / "sandbox" / "faults.json"
    server, nightly = Faults(path), Faults(path)

    server.set("wechat", "bill", "changed_amount", "T001")
    server.set("wechat", "latency_ms", 800)

    assert nightly.get("wechat", "bill", "T001") == "changed_amount"
    assert nightly.get("wechat", "latency_ms", "T002") == 800
    assert nightly.get("alipay", "latency_ms") is None


def test_clearing_a_channel_is_seen_by_another_process(tmp_path):
    path = tmp_path / "faults.json"
    server, nightly = Faults(path), Faults(path)
    server.set("wechat", "notification", "drop")
    server.set("alipay", "bill_missing_line", True, "A001")
    assert nightly.get("wechat", "notification") == "drop"

    nightly.clear("wechat")

    assert server.get("wechat", "notification") is None
    assert server.snapshot() == [
        {
            "channel": "alipay",
            "order": "A001",
            "name": "bill_missing_line",
            "value": True,
        }
    ]


def test_an_unreadable_file_switches_every_fault_off(tmp_path):
    path = tmp_path / "faults.json"
    path.write_text("{not json", encoding="utf-8")

    assert Faults(path).get("wechat", "notification") is None


def test_without_a_path_switches_live_in_memory(tmp_path):
    faults = Faults()
    faults.set("wechat", "notification", "drop")

    assert faults.get("wechat", "notification") == "drop"
    assert list(tmp_path.iterdir()) == []


def test_the_sandbox_faults_setting_switches_faults_on_at_start(tmp_path):
    from campus import create_app
    from campus.settings import Settings

    settings = Settings.from_environ(
        {
            "CAMPUS_INSTANCE_PATH": str(tmp_path),
            "CAMPUS_SCHEDULER": "off",
            "CAMPUS_SANDBOX_FAULTS": "wechat.notification=drop; alipay.latency_ms=800",
        }
    )

    sandbox = create_app(settings).extensions["campus.sandbox"]

    assert sandbox.faults.get("wechat", "notification", "T001") == "drop"
    assert sandbox.faults.get("alipay", "latency_ms") == 800


def test_an_unknown_fault_in_the_setting_refuses_the_start(tmp_path):
    from campus import create_app
    from campus.settings import Settings, SettingsError

    settings = Settings.from_environ(
        {
            "CAMPUS_INSTANCE_PATH": str(tmp_path),
            "CAMPUS_SANDBOX_FAULTS": "wechat.notifcation=drop",
        }
    )

    with pytest.raises(SettingsError, match="notifcation"):
        create_app(settings)
