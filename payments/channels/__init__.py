"""Payment channels behind one interface: see ``payments.channels.base``.

``channel_for(name)`` gives the app's configured channel, built once per app. With
the sandbox mounted, the channels share its clock, so that a test or a person who
moves the sandbox's time moves it for notification freshness too.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, current_app

from payments.channels.base import Channel, ChannelName

_lock = threading.Lock()


def channel_for(name: str, app: Flask | None = None) -> Channel:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    channels: dict[str, Channel] = app.extensions.setdefault("campus.channels", {})
    if name not in channels:
        with _lock:
            if name not in channels:
                channels[name] = _build(ChannelName(name), app)
    return channels[name]


def _build(name: ChannelName, app: Flask) -> Channel:
    options: dict[str, Any] = {}
    sandbox = app.extensions.get("campus.sandbox")
    if name is ChannelName.WECHAT:
        from payments.channels.wechat.channel import WechatChannel

        if sandbox is not None:
            options["now"] = sandbox.clock.now
        return WechatChannel.from_app(app, **options)
    if name is ChannelName.ALIPAY:
        from payments.channels.alipay.channel import AlipayChannel

        config = AlipayChannel.from_app(app).config
        if sandbox is not None:
            options["clock"] = sandbox.clock.now
        return AlipayChannel(config, **options)
    raise ValueError(f"no channel adapter for {name}")
