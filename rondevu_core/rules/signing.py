"""Ed25519 identities and the signed ``message`` of every call (docs/protocol.md §4).

Keys travel as standard base64 with padding: the 32-byte seed is the private key, the
raw 32-byte point is the public key, signatures are the raw 64 bytes.  A call signs the
UTF-8 bytes of ``{method}:{username}:{context}:{ts}`` (or ``{method}:{username}:{ts}``
for ``poll``), with ``ts`` in Unix milliseconds.

The 0.5.4 server reads the username from the second ``:`` field and the timestamp from
the last one with JavaScript ``parseInt`` semantics; `parse_auth_message` reproduces that
so our server and the original accept the same messages.  `expected_context` gives the
context an honest client signs for each method, which lets our server bind the signature
to the call it authorises (our S1 hardening).

Key generation takes its randomness as an argument: the core reads no random source.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from rondevu_core.errors import ValidationError

__all__ = [
    "TIMESTAMP_TOLERANCE_MS",
    "AuthMessage",
    "KeyPair",
    "build_message",
    "canonical_public_key",
    "check_timestamp",
    "decode_base64",
    "expected_context",
    "js_number_to_string",
    "js_parse_int",
    "parse_auth_message",
    "sign_message",
    "utf8",
    "verify_signature",
]

TIMESTAMP_TOLERANCE_MS = 300_000

ERR_MESSAGE_FORMAT = "Invalid message format: must have at least action:username:timestamp"
ERR_TIMESTAMP_INVALID = "Invalid timestamp in message"
ERR_TIMESTAMP_RANGE = "Timestamp too old or too far in future (tolerance: 300s)"

SEED_LENGTH = 32
PUBLIC_KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
MAX_ENCODED_KEY_CHARS = 128
"""Longest public key or signature text worth decoding: canonical base64 of a key is 44
characters and of a signature 88; anything far longer is not one, and decoding it would
only cost time."""


def decode_base64(text: str) -> bytes | None:
    """Decode standard or URL-safe base64, padding optional; None when it is not base64.

    Node's decoder (used by the original server) is more lenient still, but honest
    clients only ever send canonical base64, which this accepts.
    """
    cleaned = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    if not cleaned or len(cleaned) % 4 == 1:
        return None
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8(text: str) -> bytes:
    """UTF-8 bytes as JavaScript's TextEncoder makes them: a lone surrogate becomes U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def canonical_public_key(text: str) -> str | None:
    """The canonical wire form (standard base64, padded: 44 characters) of a public key
    that `decode_base64` accepts, or None when ``text`` is no 32-byte key.

    A server stores this form, never the text as sent: otherwise padding, whitespace or
    the URL-safe alphabet would make one key look like many (one key, one name) and
    let a claim store megabytes.
    """
    if len(text) > MAX_ENCODED_KEY_CHARS:
        return None
    raw = decode_base64(text)
    if raw is None or len(raw) != PUBLIC_KEY_LENGTH:
        return None
    return _encode(raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPair:
    """An Ed25519 identity in the wire encoding (standard base64 with padding)."""

    public_key: str
    private_key: str

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair of a 32-byte Ed25519 seed."""
        if len(seed) != SEED_LENGTH:
            raise ValidationError("Ed25519 private key must be 32 bytes")
        signing = SigningKey(seed)
        return cls(public_key=_encode(bytes(signing.verify_key)), private_key=_encode(seed))

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes]) -> KeyPair:
        """A new key pair from ``random_bytes(32)`` (``os.urandom`` in a driver)."""
        return cls.from_seed(random_bytes(SEED_LENGTH))

    @classmethod
    def from_private_key(cls, private_key: str) -> KeyPair:
        """Import a base64 private key (the 32-byte seed), deriving the public key."""
        seed = decode_base64(private_key)
        if seed is None or len(seed) != SEED_LENGTH:
            raise ValidationError("Private key must be base64 of a 32-byte Ed25519 seed")
        return cls.from_seed(seed)

    @classmethod
    def from_exported(cls, public_key: str, private_key: str) -> KeyPair:
        """Import a pair as ``Rondevu.connect(keypair=…)`` takes it, checking they match."""
        pair = cls.from_private_key(private_key)
        if decode_base64(public_key) != decode_base64(pair.public_key):
            raise ValidationError("Public key does not match private key")
        return pair

    def sign(self, message: str) -> str:
        """The base64 signature of ``message``'s UTF-8 bytes."""
        return sign_message(self.private_key, message)


def sign_message(private_key: str, message: str) -> str:
    """Sign the UTF-8 bytes of ``message`` with a base64 seed; return base64."""
    seed = decode_base64(private_key)
    if seed is None or len(seed) != SEED_LENGTH:
        raise ValidationError("Private key must be base64 of a 32-byte Ed25519 seed")
    signed = SigningKey(seed).sign(utf8(message))
    return _encode(signed.signature)


def verify_signature(public_key: str, message: str, signature: str) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by the key.

    Never raises on malformed input: a key or signature that does not decode, or has the
    wrong length, simply does not verify.
    """
    if len(public_key) > MAX_ENCODED_KEY_CHARS or len(signature) > MAX_ENCODED_KEY_CHARS:
        return False
    key = decode_base64(public_key)
    sig = decode_base64(signature)
    if key is None or sig is None or len(key) != PUBLIC_KEY_LENGTH:
        return False
    if len(sig) != SIGNATURE_LENGTH:
        return False
    try:
        VerifyKey(key).verify(utf8(message), sig)
    except (CryptoError, ValueError, TypeError):  # bad signature, or a key libsodium rejects
        return False
    return True


def build_message(method: str, username: str, context: str | None, timestamp_ms: int) -> str:
    """The string a client signs for one call (§4)."""
    if context is None:
        return f"{method}:{username}:{timestamp_ms}"
    return f"{method}:{username}:{context}:{timestamp_ms}"


def js_number_to_string(value: object) -> str:
    """``String(value)`` for the JSON scalars a client interpolates into a message.

    A number is a JavaScript double: an integer beyond 2**53 is first rounded to one, as
    ``JSON.parse`` would, then written the way ``Number.prototype.toString`` writes it.
    """
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) <= 2**53:
            return str(value)
        try:
            return _js_double_to_string(float(value))
        except OverflowError:  # beyond any double: JSON.parse gives Infinity
            return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, float):
        return _js_double_to_string(value)
    return str(value)


def _js_double_to_string(value: float) -> str:
    """ECMAScript Number::toString(10): the shortest digits that round-trip (Python's
    ``repr`` finds the same ones), laid out by JavaScript's rules, which differ from
    Python's (``1e21`` vs ``1e+21``, ``1.5e-7`` vs ``1.5e-07``, no ``.0``)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction.rstrip("0")).lstrip("0")
    # point: where the decimal point sits relative to the digits (value = 0.digits x 10^point)
    point = len(whole) + (int(exponent) if exponent else 0)
    if whole == "0":  # repr of a small number without exponent: 0.000123
        point = -(len(fraction) - len(fraction.lstrip("0")))
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    shown = digits[0] + ("." + digits[1:] if count > 1 else "")
    return f"{sign}{shown}e{'+' if point - 1 >= 0 else '-'}{abs(point - 1)}"


# Which parameter names each method's context, in the 0.18.9 client (§4 table).
_CONTEXT_PARAM: Mapping[str, str] = {
    "getUser": "username",
    "publishService": "serviceFqn",
    "getService": "serviceFqn",
    "deleteService": "serviceFqn",
    "answerOffer": "offerId",
    "getOfferAnswer": "offerId",
    "addIceCandidates": "offerId",
    "getIceCandidates": "offerId",
}


def expected_context(method: str, params: Mapping[str, object]) -> str | None:
    """The context an honest 0.18.9 client signs for ``method`` with these params.

    None for ``poll`` (its message has no context) and for unknown methods.
    """
    name = _CONTEXT_PARAM.get(method)
    if name is None:
        return None
    context = js_number_to_string(params.get(name))
    if method == "getIceCandidates":
        context += ":" + js_number_to_string(params.get("since", 0))
    return context


# JavaScript's WhiteSpace and LineTerminator characters, which parseInt skips.
_JS_SPACE = (
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_DEC_PREFIX = re.compile(r"[+-]?[0-9]+")
_HEX_PREFIX = re.compile(r"([+-]?)0[xX]([0-9a-fA-F]*)")


def js_parse_int(text: str) -> int | None:
    """JavaScript ``parseInt(text)`` restricted to integers; None where JS gives NaN.

    Leading whitespace is skipped, a sign is allowed, ``0x`` switches to hexadecimal, and
    parsing stops at the first character that is not a digit (``"17abc"`` is 17).
    """
    stripped = text.lstrip(_JS_SPACE)
    hex_match = _HEX_PREFIX.match(stripped)
    if hex_match:
        sign, digits = hex_match.groups()
        if not digits:
            return None  # "0x" with no hex digit is NaN in JavaScript
        digits = digits[:64]  # a realistic timestamp has 12 digits; bound the work
        value = int(digits, 16)
        return -value if sign == "-" else value
    match = _DEC_PREFIX.match(stripped)
    if match is None:
        return None
    digits = match.group(0)
    # Bound the conversion: anything this long is far outside the accepted window anyway.
    if len(digits.lstrip("+-")) > 30:
        return -(10**30) if digits.startswith("-") else 10**30
    return int(digits)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthMessage:
    """A signed ``message`` split the way the 0.5.4 server splits it."""

    method: str
    username: str
    context: str | None
    timestamp_ms: int


def parse_auth_message(message: str) -> AuthMessage:
    """Split ``message`` into method, username, context and timestamp.

    Raises `ValidationError` with the server's texts when there are fewer than three
    fields or the last field has no leading integer.  The time window is checked
    separately (`check_timestamp`), since the server checks it last.
    """
    parts = message.split(":")
    if len(parts) < 3:
        raise ValidationError(ERR_MESSAGE_FORMAT)
    timestamp = js_parse_int(parts[-1])
    if timestamp is None:
        raise ValidationError(ERR_TIMESTAMP_INVALID)
    context = ":".join(parts[2:-1]) if len(parts) > 3 else None
    return AuthMessage(method=parts[0], username=parts[1], context=context, timestamp_ms=timestamp)


def check_timestamp(timestamp_ms: int, now_ms: int) -> None:
    """Raise `ValidationError` unless ``timestamp_ms`` is within ±300 s of ``now_ms``."""
    if abs(now_ms - timestamp_ms) > TIMESTAMP_TOLERANCE_MS:
        raise ValidationError(ERR_TIMESTAMP_RANGE)
