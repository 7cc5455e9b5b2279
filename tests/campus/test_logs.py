from __future__ import annotations

import io
import json
import logging

from campus import logs


def test_json_lines_carry_the_event_and_its_ids():
    stream = io.StringIO()
    logs.configure("INFO", json_lines=True)
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_campus", 0))
    handler.setStream(stream)

    logging.getLogger("payments.test").info(
        "top_up_settled", extra={"out_trade_no": "T2026120300001", "amount_fen": 1250}
    )

    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["event"] == "top_up_settled"
    assert record["out_trade_no"] == "T2026120300001"
    assert record["amount_fen"] == 1250
    assert record["level"] == "INFO" and record["name"] == "payments.test"
    logs.configure("INFO")


def test_payment_codes_are_masked_to_their_ends():
    assert logs.mask_code("134567890123456789") == "1345************89"
    assert logs.mask_code("12345") == "*****"
