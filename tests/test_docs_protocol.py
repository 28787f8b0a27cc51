"""docs/protocol.md's worked examples are right: its keys, signatures, signed call and
offer id are recomputed here with our code, read from the page itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rondevu_core.rules.offer_id import offer_id_for_sdp
from rondevu_core.rules.signing import KeyPair, verify_signature

PAGE = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
SEED = bytes(range(1, 33))


def _after(label: str) -> str:
    found = re.search(rf"^    {label}\s+(\S+)$", PAGE, re.M)
    assert found is not None, label
    return found.group(1)


def test_the_example_key_pair_is_the_seed_1_to_32() -> None:
    pair = KeyPair.from_seed(SEED)
    assert _after("private key") == pair.private_key
    assert _after("public key") == pair.public_key


def test_every_example_signature_is_the_keys_signature_of_its_message() -> None:
    pair = KeyPair.from_seed(SEED)
    rows = re.findall(r"^\| `([a-zA-Z]+:alice:[^`]+)` \| `([A-Za-z0-9+/=]{88})` \|$", PAGE, re.M)
    assert len(rows) == 2
    poll_signature = re.search(r"^    ([A-Za-z0-9+/=]{88})$", PAGE, re.M)
    assert poll_signature is not None
    rows.append(("poll:alice:1765700000000", poll_signature.group(1)))
    for message, signature in rows:
        assert pair.sign(message) == signature, message


def test_the_example_call_verifies() -> None:
    found = re.search(r'```json\n(\{"method": "poll".*?\})\n```', PAGE, re.S)
    assert found is not None
    call = json.loads(found.group(1))
    assert verify_signature(call["publicKey"], call["message"], call["signature"])
    assert call["publicKey"] == KeyPair.from_seed(SEED).public_key


def test_the_example_offer_id_is_the_hash_of_its_sdp() -> None:
    found = re.search(r"For the SDP\s+`([^`]+)` it is\s+`([0-9a-f]{64})`", PAGE)
    assert found is not None
    sdp = found.group(1).replace("\\r\\n", "\r\n")
    assert offer_id_for_sdp(sdp) == found.group(2)


def test_links_point_at_pages_of_the_docs_folder() -> None:
    """Every page the protocol page links to is in docs/ (no page that does not exist)."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    targets = re.findall(r"\]\(([a-z-]+\.md)(?:#[\w-]+)?\)", PAGE)
    assert targets
    for target in targets:
        assert (docs / target).is_file(), target
