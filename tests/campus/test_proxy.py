"""Behind a reverse proxy (``CAMPUS_PROXY_HOPS``) the client is the address the
proxy saw; without it a forwarded header is only a claim and is ignored."""

from __future__ import annotations

import dataclasses

import pytest

from transcripts import codes


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return dataclasses.replace(settings, proxy_hops=1)


def wrong_code_statuses(client, forwarded_for: str, times: int) -> list[int]:
    return [
        client.get(
            f"/api/verify/codes/{codes.new_code()}",
            headers={"X-Forwarded-For": forwarded_for},
        ).status_code
        for _ in range(times)
    ]


def test_rate_limits_count_the_address_the_proxy_forwarded(client):
    guesser = wrong_code_statuses(client, "203.0.113.5", 21)
    neighbour = wrong_code_statuses(client, "203.0.113.6", 1)

    assert guesser[-1] == 429
    assert neighbour == [404], "another visitor behind the same proxy is not limited"
