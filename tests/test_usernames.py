"""Usernames (docs/protocol.md §5): the grammar, the server's error order, anonymous names."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rondevu_core.errors import ValidationError
from rondevu_core.rules.usernames import (
    generate_anonymous_username,
    is_valid_username,
    to_base36,
    validate_username,
)

GRAMMAR = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-"
valid_usernames = st.from_regex(r"\A[a-z0-9][a-z0-9.-]{1,30}[a-z0-9]\Z")


@pytest.mark.parametrize("name", ["alice", "d.ve", "a-b", "abc", "x" * 32, "anon-mj5k2p1c-a3f501"])
def test_accepts_valid_names(name: str) -> None:
    assert validate_username(name) == name


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "Username must be a string"),
        (42, "Username must be a string"),
        ("ab", "Username must be at least 3 characters"),
        ("", "Username must be at least 3 characters"),
        ("a" * 33, "Username must be at most 32 characters"),
        (
            "Alice",
            "Username must be lowercase alphanumeric with optional dashes, "
            "and start/end with alphanumeric",
        ),
        (
            "-ab",
            "Username must be lowercase alphanumeric with optional dashes, "
            "and start/end with alphanumeric",
        ),
        (
            "ab.",
            "Username must be lowercase alphanumeric with optional dashes, "
            "and start/end with alphanumeric",
        ),
        (
            "abc\n",
            "Username must be lowercase alphanumeric with optional dashes, "
            "and start/end with alphanumeric",
        ),
        (
            "ab_c",
            "Username must be lowercase alphanumeric with optional dashes, "
            "and start/end with alphanumeric",
        ),
    ],
)
def test_rejects_with_exact_text_in_server_order(value: object, error: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_username(value)
    assert str(raised.value) == error


def test_length_counts_utf16_code_units_like_javascript() -> None:
    # One astral character is two UTF-16 units: the length rule fires before the charset.
    with pytest.raises(ValidationError, match="at most 32"):
        validate_username("\U0001f600" * 17)
    with pytest.raises(ValidationError, match="lowercase"):
        validate_username("\U0001f600" * 2)


@given(valid_usernames)
def test_every_grammatical_name_is_accepted(name: str) -> None:
    assert is_valid_username(name)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_acceptance_equals_the_spec_grammar(text: str) -> None:
    expected = 3 <= len(text) <= 32 and GRAMMAR.fullmatch(text) is not None
    expected = expected and text.isascii() and "\n" not in text
    assert is_valid_username(text) == expected


@given(st.integers(min_value=0, max_value=2**64))
def test_base36_round_trips(number: int) -> None:
    assert int(to_base36(number), 36) == number
    assert to_base36(number) == to_base36(number).lower()


def test_base36_rejects_negative_numbers() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        to_base36(-1)


@given(st.integers(min_value=0, max_value=4102444800000), st.binary(min_size=3, max_size=3))
def test_anonymous_names_are_valid_and_deterministic(now: int, suffix: bytes) -> None:
    name = generate_anonymous_username(now, lambda n: suffix[:n])
    assert is_valid_username(name)
    assert name == f"anon-{to_base36(now)}-{suffix.hex()}"
    assert name == generate_anonymous_username(now, lambda n: suffix[:n])


def test_anonymous_name_matches_the_original_format() -> None:
    name = generate_anonymous_username(1765706523456, lambda n: bytes([0xA3, 0xF5, 0x01]))
    assert name == "anon-mj5k2p1c-a3f501"


def test_anonymous_name_demands_three_random_bytes() -> None:
    with pytest.raises(ValueError, match="3 bytes"):
        generate_anonymous_username(0, lambda n: b"\x00")
