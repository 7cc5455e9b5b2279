"""wechatpayv3, pointed at our gateway, and the one place its errors are translated.

What the SDK does and what we add (wechatpayv3 2.0.4, pinned):

- It keeps the gateway address in ``Core._gate_way`` and, in certificate mode,
  downloads platform certificates from inside its constructor, before anyone could
  change that address: ``_Core`` sets the address before the first download.
- It refreshes certificates by clearing its list and refilling it, so a failed
  refresh leaves none; ``_Core`` keeps the old list when a refresh brings nothing,
  lets one thread refresh at a time, and at most once a minute.
- It verifies the signature of 2xx answers only, and believes any error answer:
  an unsigned ``404 ORDER_NOT_EXIST`` from whoever sits between us and WeChat Pay
  would make a paid order look absent. WeChat Pay signs its error answers as
  well, so ``_Core.request`` verifies every answer it does not deliberately skip
  (certificate downloads, which the APIv3 key seals, and bill files, which their
  hash proves).
- It raises a bare ``Exception`` for an unsigned or badly signed 2xx answer, and
  ``ValueError`` for an odd ``Wechatpay-Serial``; ``_Core`` turns every failed
  verification into ``Unverified`` so that ``call`` can tell a forged answer from
  a broken connection.

Errors, as ``call`` translates them::

    requests timeout / connection error        → ChannelUnavailable
    5xx, SYSTEM_ERROR / SYSTEMERROR, 429,
    an answer that is not JSON                 → ChannelUnavailable
    2xx without a valid signature              → ForgedResponse
    an error answer without a valid signature:
      claiming a WeChat Pay code               → ForgedResponse
      with no code (a proxy's error page)      → ChannelUnavailable
    other 4xx {"code", "message"}              → ChannelRejected(error_code=code)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import requests
from cryptography import x509
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import __version__ as SDK_VERSION
from wechatpayv3.core import Core
from wechatpayv3.type import RequestType
from wechatpayv3.utils import build_authorization

from payments.channels.base import (
    ChannelRejected,
    ChannelUnavailable,
    ForgedResponse,
)
from payments.channels.wechat.config import WechatConfig

logger = logging.getLogger(__name__)

CHANNEL = "wechat"
UNAVAILABLE_CODES = frozenset(
    {"SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED", "BANKERROR"}
)


REFRESH_INTERVAL_SECONDS = 60
"""At most one platform-certificate download a minute."""


class Unverified(Exception):
    """A WeChat Pay signature that is missing, malformed or wrong."""


class UnverifiedErrorAnswer(Unverified):
    """An error answer (not 2xx) whose signature is missing or wrong: what it says
    is not to be believed, only its status and body kept for the logs."""

    def __init__(self, message: str, status: int, content: Any) -> None:
        super().__init__(message)
        self.status = status
        self.content = content


class _Core(Core):  # type: ignore[misc]
    def __init__(self, *, gateway: str, **kwargs: Any) -> None:
        self._campus_gateway = gateway
        self._refresh_lock = threading.Lock()
        self._refreshed_at = float("-inf")
        super().__init__(**kwargs)
        self._gate_way = gateway

    def _init_certificates(self) -> None:
        self._gate_way = self._campus_gateway
        super()._init_certificates()

    def _update_certificates(self) -> None:
        with self._refresh_lock:
            # Every answer or notification naming an unknown serial makes the SDK
            # download the certificates again; a flood of forged notifications
            # must not become a flood of downloads.
            if time.monotonic() - self._refreshed_at < REFRESH_INTERVAL_SECONDS:
                return
            self._refreshed_at = time.monotonic()
            previous: list[x509.Certificate] = self._certificates
            self._certificates: list[x509.Certificate] = []
            try:
                super()._update_certificates()
            finally:
                if not self._certificates:
                    self._certificates = previous
        logger.info(
            "wechat_platform_certificates",
            extra={
                "serials": [format(c.serial_number, "X") for c in self._certificates]
            },
        )

    def request(
        self,
        path: str,
        method: RequestType = RequestType.GET,
        data: Any = None,
        skip_verify: bool = False,
        sign_data: Any = None,
        files: Any = None,
        cipher_data: bool = False,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``Core.request`` of wechatpayv3 2.0.4, sending the same request, with
        one change: the answer's signature is verified whatever its status. The
        SDK's method verifies 2xx answers only and returns no headers, so it
        cannot be wrapped; this replaces it."""
        headers = dict(headers or {})
        headers["Content-Type"] = "multipart/form-data" if files else "application/json"
        headers["Accept"] = "application/json"
        headers["User-Agent"] = (
            f"wechatpay python sdk v{SDK_VERSION}"
            "(https://github.com/minibear2021/wechatpayv3)"
        )
        if self._public_key_id or cipher_data:
            headers["Wechatpay-Serial"] = self._public_key_id or format(
                self._last_certificate().serial_number, "X"
            )
        headers["Authorization"] = build_authorization(
            path,
            method.value,
            self._mchid,
            self._cert_serial_no,
            self._private_key,
            data=sign_data if sign_data else data,
        )
        response = requests.request(
            method.value,
            self._gate_way + path,
            json=None if files else data,
            data=data if files else None,
            files=files,
            headers=headers,
            proxies=self._proxy,
            timeout=self._timeout,
        )
        is_json = "application/json" in response.headers.get("Content-Type", "")
        content = response.text if is_json else response.content
        if not skip_verify:
            try:
                self._verify_signature(response.headers, response.text)
            except Unverified as error:
                if 200 <= response.status_code < 300:
                    raise
                raise UnverifiedErrorAnswer(
                    str(error), response.status_code, content
                ) from error
        return response.status_code, content

    def _verify_signature(self, headers: Any, body: Any) -> bool:
        try:
            verified = super()._verify_signature(headers, body)
        except requests.RequestException:
            raise
        except Exception as error:
            raise Unverified(str(error)) from error
        if not verified:
            raise Unverified("the signature does not verify")
        return True


class _Client(WeChatPay):  # type: ignore[misc]
    """``WeChatPay`` around a core we built ourselves; its constructor would build
    its own, aimed at the real gateway."""

    def __init__(self, core: Core, config: WechatConfig) -> None:
        self._type = WeChatPayType.NATIVE
        self._mchid = config.mchid
        self._appid = config.appid
        self._notify_url = None
        self._core = core
        self._partner_mode = False


def build_client(config: WechatConfig) -> WeChatPay:
    """The SDK client; in certificate mode this downloads the certificates."""
    timeout = (min(5.0, config.timeout_seconds), config.timeout_seconds)
    try:
        core = _Core(
            gateway=config.gateway_url,
            mchid=config.mchid,
            cert_serial_no=config.merchant_serial,
            private_key=config.private_key_pem,
            apiv3_key=config.apiv3_key,
            cert_dir=str(config.cert_dir) if config.cert_dir else None,
            timeout=timeout,
            public_key=(
                config.public_key_pem if config.platform_mode == "public_key" else None
            ),
            public_key_id=(
                config.public_key_id if config.platform_mode == "public_key" else None
            ),
        )
    except requests.RequestException as error:
        raise ChannelUnavailable(
            "cannot reach WeChat Pay for its platform certificates", channel=CHANNEL
        ) from error
    except Unverified as error:
        raise ForgedResponse(str(error), channel=CHANNEL) from error
    except Exception as error:
        # The SDK's word for "no certificate decrypted and in date": the gateway
        # answered an error, or our APIv3 key is not the one it seals with.
        raise ChannelUnavailable(
            "no usable WeChat Pay platform certificate (gateway error or wrong"
            " APIv3 key)",
            channel=CHANNEL,
        ) from error
    return _Client(core, config)


def call(
    operation: str,
    function: Callable[..., tuple[int, Any]],
    *args: Any,
    order: str | None = None,
    accept: Collection[str] = (),
    **kwargs: Any,
) -> tuple[int, dict[str, Any] | bytes]:
    """Run one SDK call and answer ``(status, parsed JSON or raw bytes)``, or raise
    the ``ChannelError`` that says what happened; ``order`` names our order in
    logs and errors. A 4xx whose code is in
    ``accept`` is answered rather than raised (e.g. ``ORDER_NOT_EXIST`` for a
    query)."""
    out_trade_no = order
    context = {"operation": operation, "out_trade_no": out_trade_no}
    try:
        status, content = function(*args, **kwargs)
    except requests.Timeout as error:
        logger.warning("wechat_call_timeout", extra=context)
        raise ChannelUnavailable(
            f"WeChat Pay did not answer {operation} in time",
            channel=CHANNEL,
            out_trade_no=out_trade_no,
        ) from error
    except requests.RequestException as error:
        logger.warning("wechat_call_unreachable", extra=context)
        raise ChannelUnavailable(
            f"cannot reach WeChat Pay for {operation}",
            channel=CHANNEL,
            out_trade_no=out_trade_no,
        ) from error
    except UnverifiedErrorAnswer as error:
        claimed = (_parse(error.content) or {}).get("code")
        failure = context | {"status": error.status, "claimed_code": claimed}
        if claimed is None:
            # Not WeChat Pay's own shape (a proxy's or load balancer's error page):
            # it says nothing about the order, whose outcome is unknown.
            logger.warning("wechat_answer_unsigned_error", extra=failure)
            raise ChannelUnavailable(
                f"WeChat Pay's gateway answered {operation} with an unsigned "
                f"{error.status}",
                channel=CHANNEL,
                out_trade_no=out_trade_no,
            ) from error
        if error.status == 401 and claimed == "SIGN_ERROR":
            # WeChat Pay does not sign its refusal of our own signature: most
            # likely our key or serial is wrong. Still nothing to trust about the
            # order, but the person on call should look at our settings first.
            logger.error("wechat_request_signature_refused", extra=failure)
            raise ChannelUnavailable(
                f"WeChat Pay refused the signature of our {operation} request "
                "(SIGN_ERROR): check CAMPUS_WECHAT_PRIVATE_KEY_FILE and "
                "CAMPUS_WECHAT_MERCHANT_SERIAL",
                channel=CHANNEL,
                out_trade_no=out_trade_no,
            ) from error
        # Claims to be WeChat Pay's business answer without its signature: never
        # read as "no such order" or a refusal, which would end the order here.
        logger.error("wechat_answer_forged", extra=failure)
        raise ForgedResponse(
            f"WeChat Pay's {error.status} {claimed} answer to {operation} is not "
            f"validly signed: {error}",
            channel=CHANNEL,
            out_trade_no=out_trade_no,
        ) from error
    except Unverified as error:
        logger.error("wechat_answer_forged", extra=context)
        raise ForgedResponse(
            f"WeChat Pay's answer to {operation} is not validly signed: {error}",
            channel=CHANNEL,
            out_trade_no=out_trade_no,
        ) from error

    body = _parse(content)
    code = body.get("code") if isinstance(body, dict) else None
    logger.info("wechat_call", extra=context | {"status": status, "code": code})
    if 200 <= status < 300:
        if isinstance(content, bytes | bytearray) and body is None:
            return status, bytes(content)
        if body is None and content:
            raise ChannelUnavailable(
                f"WeChat Pay's answer to {operation} is not JSON",
                channel=CHANNEL,
                out_trade_no=out_trade_no,
            )
        return status, body or {}
    message = body.get("message", "") if isinstance(body, dict) else ""
    if status >= 500 or status == 429 or code in UNAVAILABLE_CODES or code is None:
        raise ChannelUnavailable(
            f"WeChat Pay answered {operation} with {status} {code or ''} {message}",
            channel=CHANNEL,
            out_trade_no=out_trade_no,
            error_code=code,
        )
    if code in accept:
        return status, body or {}
    raise ChannelRejected(
        f"WeChat Pay refused {operation}: {code} {message}",
        channel=CHANNEL,
        out_trade_no=out_trade_no,
        error_code=code,
    )


def _parse(content: Any) -> dict[str, Any] | None:
    if isinstance(content, bytes | bytearray):
        try:
            content = bytes(content).decode()
        except UnicodeDecodeError:
            return None
    if not content:
        return None
    try:
        parsed = json.loads(content)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
