from __future__ import annotations

import pytest

from campus.errors import InvalidAmount
from payments.money import format_yuan, parse_fen


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("12.5", 1250),
        ("12.50", 1250),
        ("¥12.50", 1250),
        ("￥ 12.50", 1250),
        (" 12 ", 1200),
        ("0.01", 1),
        ("12.", 1200),
        ("1000000", 100_000_000),
        # Full width, as a Chinese input method types it.
        ("１２．５０", 1250),
        ("￥１２", 1200),
        (1250, 1250),
    ],
)
def test_parses_yuan_exactly(app, text, fen):
    assert parse_fen(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "12.505",
        "-1",
        "-0.01",
        "0",
        "0.00",
        "abc",
        "",
        "1e3",
        "12,50",
        "1,000.00",
        "1000000.01",
        "99999999999999",
        ".5",
        "NaN",
        "12.5.0",
        "٥٠",  # Arabic-Indic digits: \d matches them, an amount does not
        "१२",  # Devanagari
        "－1",  # a full-width minus is still a minus
        "1²",  # a superscript two is not a digit of an amount
        "①②",
        True,
    ],
)
def test_refuses_what_is_not_an_exact_positive_amount(app, text):
    with pytest.raises(InvalidAmount) as raised:
        parse_fen(text)

    assert raised.value.code == "invalid_amount"
    assert str(raised.value.detail)


def test_zero_is_allowed_only_when_asked(app):
    assert parse_fen("0", allow_zero=True) == 0


def test_a_lower_maximum_is_enforced_and_named(app):
    with pytest.raises(InvalidAmount) as raised:
        parse_fen("500.01", maximum=50_000)

    assert raised.value.fields["limit_fen"] == 50_000


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (1250, "12.50"),
        (1, "0.01"),
        (0, "0.00"),
        (-5, "-0.05"),
        (100_000_000, "1000000.00"),
    ],
)
def test_formats_fen_as_yuan(fen, text):
    assert format_yuan(fen) == text


def test_messages_follow_the_locale(app):
    with app.test_request_context("/?lang=en"):
        app.preprocess_request()
        with pytest.raises(InvalidAmount) as raised:
            parse_fen("12.505")
        english = str(raised.value.detail)
    with app.test_request_context("/?lang=zh"):
        app.preprocess_request()
        with pytest.raises(InvalidAmount) as raised:
            parse_fen("12.505")
        chinese = str(raised.value.detail)

    assert "two decimals" in english
    assert chinese != english and "分" in chinese
