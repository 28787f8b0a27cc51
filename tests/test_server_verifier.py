"""`SignatureVerifier`: every check answered, correctly, however calls interleave."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_core.rules.signing import KeyPair
from rondevu_server.verifier import SignatureVerifier

KEYS = [KeyPair.generate(os.urandom) for _ in range(3)]


def _check(index: int, forged: bool) -> tuple[str, str, str]:
    pair = KEYS[index % len(KEYS)]
    message = f"poll:user{index}:1765700000000"
    signer = KEYS[(index + 1) % len(KEYS)] if forged else pair
    return pair.public_key, message, signer.sign(message)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.integers(0, 2))
def test_concurrent_checks_get_their_own_answers(forged: list[bool], threads: int) -> None:
    async def run() -> list[bool]:
        verifier = SignatureVerifier(threads=threads)
        try:
            checks = [_check(i, bad) for i, bad in enumerate(forged)]
            return await asyncio.gather(*(verifier.verify(*check) for check in checks))
        finally:
            verifier.close()

    assert asyncio.run(run()) == [not bad for bad in forged]


def test_garbage_never_verifies_and_never_raises() -> None:
    async def run() -> list[bool]:
        verifier = SignatureVerifier()
        try:
            key, message, signature = _check(0, False)
            return await asyncio.gather(
                *[
                    verifier.verify("not base64!", message, signature),
                    verifier.verify(key, message, "AAAA"),
                    verifier.verify(key, message + "x", signature),
                    verifier.verify(key, message, signature),
                ]
            )
        finally:
            verifier.close()

    assert asyncio.run(run()) == [False, False, False, True]


def test_a_cancelled_caller_does_not_disturb_the_batch() -> None:
    async def run() -> list[bool]:
        verifier = SignatureVerifier()
        try:
            first = asyncio.ensure_future(verifier.verify(*_check(0, False)))
            cancelled = asyncio.ensure_future(verifier.verify(*_check(1, False)))
            last = asyncio.ensure_future(verifier.verify(*_check(2, True)))
            await asyncio.sleep(0)  # let all three queue
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            return [await first, await last]
        finally:
            verifier.close()

    assert asyncio.run(run()) == [True, False]


def test_checks_after_close_run_inline() -> None:
    async def run() -> tuple[bool, bool]:
        verifier = SignatureVerifier()
        pending = asyncio.ensure_future(verifier.verify(*_check(0, False)))
        queued = asyncio.ensure_future(verifier.verify(*_check(1, False)))
        await asyncio.sleep(0)
        verifier.close()
        verifier.close()
        after = await verifier.verify(*_check(2, True))
        return await pending and await queued, after

    assert asyncio.run(run()) == (True, False)
