"""Verification codes: enough randomness, readable groups, typos caught."""

from __future__ import annotations

import pytest

from transcripts import codes


def test_a_code_has_at_least_80_random_bits_in_five_groups_of_four():
    code = codes.new_code()

    assert codes.BITS >= 80
    assert [len(group) for group in code.split("-")] == [4, 4, 4, 4, 4]
    assert set(code.replace("-", "")) <= set(codes.ALPHABET)
    assert len({codes.new_code() for _ in range(1000)}) == 1000


def test_every_single_mistyped_character_is_caught():
    code = codes.new_code()
    compact = code.replace("-", "")

    for position in range(len(compact)):
        for symbol in codes.ALPHABET:
            if symbol == compact[position]:
                continue
            typo = compact[:position] + symbol + compact[position + 1 :]
            with pytest.raises(codes.MalformedCode) as caught:
                codes.normalise(typo)
            assert caught.value.reason == "check"


def test_most_swapped_neighbours_are_caught():
    caught = total = 0
    for _ in range(200):
        compact = codes.new_code().replace("-", "")
        for position in range(len(compact) - 1):
            if compact[position] == compact[position + 1]:
                continue
            swapped = (
                compact[:position]
                + compact[position + 1]
                + compact[position]
                + compact[position + 2 :]
            )
            total += 1
            caught += not codes.is_valid(swapped)

    assert caught / total > 0.99


def test_typing_is_forgiving_of_case_spaces_and_look_alikes():
    code = codes.new_code()
    sloppy = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")

    assert codes.normalise(sloppy) == code


@pytest.mark.parametrize(
    ("typed", "reason"),
    [("ABCD", "length"), ("ABCD-EFGH-JKMN-PQRS-TVW!", "symbol")],
)
def test_wrong_length_and_foreign_symbols_are_named(typed, reason):
    with pytest.raises(codes.MalformedCode) as caught:
        codes.normalise(typed)

    assert caught.value.reason == reason
