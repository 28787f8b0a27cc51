"""Fuzz target: the pure wire rules of rondevu_core on arbitrary text.

Every rule that reads text from the wire (usernames, FQNs, signed messages, base64
keys) must either accept it or raise the documented `ValidationError`; nothing else may
escape.  Run it from the repository root: ``python -m fuzz.fuzz_rules`` (atheris, when installed)
or ``python -m fuzz.fuzz_rules --iterations 100000`` (a seeded loop; see `fuzz._runner`).
"""

from __future__ import annotations

import contextlib
import sys

from fuzz._runner import run
from rondevu_core.errors import ValidationError
from rondevu_core.rules.fqn import parse_service_fqn, validate_service_fqn
from rondevu_core.rules.offer_id import offer_id_for_sdp
from rondevu_core.rules.signing import (
    canonical_public_key,
    check_timestamp,
    decode_base64,
    expected_context,
    parse_auth_message,
    verify_signature,
)
from rondevu_core.rules.usernames import validate_username


def test_one_input(data: bytes) -> None:
    """Feed one input to every text rule; only `ValidationError` may escape."""
    text = data.decode("utf-8", "surrogateescape")
    half = len(text) // 2
    for rule in (validate_username, validate_service_fqn):
        with contextlib.suppress(ValidationError):
            rule(text)
    parse_service_fqn(text)
    offer_id_for_sdp(text)
    decode_base64(text)
    canonical_public_key(text)
    verify_signature(text[:half], text, text[half:])
    expected_context(text[:half], {"offerId": text, "since": text[half:], "serviceFqn": text})
    try:
        parsed = parse_auth_message(text)
        check_timestamp(parsed.timestamp_ms, 1765700000000)
    except ValidationError:
        pass


if __name__ == "__main__":
    sys.exit(run(test_one_input, name="fuzz_rules", default_iterations=10000, max_len=64))
