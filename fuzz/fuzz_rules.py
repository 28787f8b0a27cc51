"""Fuzz target: the pure wire rules of rondevu_core on arbitrary text.

Every rule that reads text from the wire (usernames, FQNs, signed messages, base64
keys) must either accept it or raise the documented `ValidationError`; nothing else may
escape.  Run it with atheris when installed (``python fuzz/fuzz_rules.py``), or without
it as a seeded random loop (``python fuzz/fuzz_rules.py --iterations 100000``).
"""

from __future__ import annotations

import contextlib
import random
import sys

from rondevu_core.errors import ValidationError
from rondevu_core.fqn import parse_service_fqn, validate_service_fqn
from rondevu_core.offer_id import offer_id_for_sdp
from rondevu_core.signing import (
    check_timestamp,
    decode_base64,
    expected_context,
    parse_auth_message,
    verify_signature,
)
from rondevu_core.usernames import validate_username


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
    verify_signature(text[:half], text, text[half:])
    expected_context(text[:half], {"offerId": text, "since": text[half:], "serviceFqn": text})
    try:
        parsed = parse_auth_message(text)
        check_timestamp(parsed.timestamp_ms, 1765700000000)
    except ValidationError:
        pass


def main(argv: list[str]) -> None:
    """Run under atheris if it is installed, else a bounded seeded random loop."""
    try:
        import atheris
    except ImportError:
        iterations = int(argv[argv.index("--iterations") + 1]) if "--iterations" in argv else 10000
        rng = random.Random(0)
        for _ in range(iterations):
            test_one_input(rng.randbytes(rng.randrange(0, 64)))
        print(f"fuzz_rules: {iterations} inputs, no unexpected exception")
        return
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
