"""Usernames (docs/protocol.md §5): the validation rule and anonymous name generation.

A username is 3 to 32 characters of lowercase ASCII letters, digits, dots and dashes,
starting and ending with a letter or digit.  The error texts are the server's own, in the
order it checks them (the last one says "dashes" although dots are accepted: S14 is a
wording quirk we keep for wire compatibility).

Anonymous names follow the 0.18.9 client: ``anon-{now in base 36}-{6 hex digits}``.  The
clock and the random source are arguments, as everywhere in the core.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rondevu_core.errors import ValidationError

__all__ = [
    "USERNAME_MAX_LENGTH",
    "USERNAME_MIN_LENGTH",
    "generate_anonymous_username",
    "is_valid_username",
    "to_base36",
    "validate_username",
]

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 32

# ASCII only: Python's [a-z0-9] is ASCII already, and `\Z` (not `$`) refuses a trailing
# newline, which JavaScript's `$` would also refuse.
_USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]\Z")

ERR_NOT_STRING = "Username must be a string"
ERR_TOO_SHORT = "Username must be at least 3 characters"
ERR_TOO_LONG = "Username must be at most 32 characters"
ERR_BAD_CHARS = (
    "Username must be lowercase alphanumeric with optional dashes, and start/end with alphanumeric"
)


def js_length(text: str) -> int:
    """Length as JavaScript's ``String.length`` counts it: UTF-16 code units."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def validate_username(value: object) -> str:
    """Return ``value`` if it is a valid username, else raise `ValidationError`.

    Checks run in the server's order so the first failing rule names the error.
    """
    if not isinstance(value, str):
        raise ValidationError(ERR_NOT_STRING)
    length = js_length(value)
    if length < USERNAME_MIN_LENGTH:
        raise ValidationError(ERR_TOO_SHORT)
    if length > USERNAME_MAX_LENGTH:
        raise ValidationError(ERR_TOO_LONG)
    if not _USERNAME_RE.match(value):
        raise ValidationError(ERR_BAD_CHARS)
    return value


def is_valid_username(value: object) -> bool:
    """True when `validate_username` would accept ``value``."""
    try:
        validate_username(value)
    except ValidationError:
        return False
    return True


_BASE36_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def to_base36(number: int) -> str:
    """``number.toString(36)`` for a non-negative integer."""
    if number < 0:
        raise ValueError("to_base36 takes a non-negative integer")
    if number == 0:
        return "0"
    digits: list[str] = []
    while number:
        number, rest = divmod(number, 36)
        digits.append(_BASE36_DIGITS[rest])
    return "".join(reversed(digits))


def generate_anonymous_username(now_ms: int, random_bytes: Callable[[int], bytes]) -> str:
    """An ``anon-…`` username as the 0.18.9 client makes one (§5).

    ``now_ms`` is the Unix time in milliseconds; ``random_bytes(n)`` returns ``n`` random
    bytes (``os.urandom`` in a driver, a seeded source in tests).  The result is always a
    valid username for any time up to the year 2059 and beyond (base 36 stays short).
    """
    suffix = random_bytes(3)
    if len(suffix) != 3:
        raise ValueError("random_bytes(3) must return exactly 3 bytes")
    return f"anon-{to_base36(now_ms)}-{suffix.hex()}"
