"""Signature checks off the event loop: one worker thread, fed in batches.

An Ed25519 verification is the most expensive step of a call (about 60 µs here, a
quarter of a call's CPU), and libsodium releases the GIL while it runs.
`SignatureVerifier` hands checks to one worker thread so they overlap with the event
loop's HTTP and SQL work on another core.  Checks that arrive while the worker is busy
are queued and sent over together as the next batch, so the cost of crossing threads (a
future and a wake-up of the loop) is paid once per batch, not once per call; under load
a batch holds roughly as many checks as there are calls in flight.

Every signature is still checked, each with `rondevu_core.rules.signing.verify_signature`;
nothing is cached or skipped.  With ``threads=0`` (the server's default) checks run
inline on the loop.  Measured with bench/server_bench.py on a 2-core machine shared with
the load generator, the worker thread gave about the same calls/s: the worker needs the
GIL around each check, and there was little idle CPU to win.  It is meant for hosts with
idle cores.  One instance serves one event loop at a time.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor

from rondevu_core.rules.signing import verify_signature

__all__ = ["SignatureVerifier"]

_Check = tuple[str, str, str]  # public key, message, signature (as sent, base64)


def _verify_all(checks: list[_Check]) -> list[bool]:
    return [verify_signature(key, message, signature) for key, message, signature in checks]


class SignatureVerifier:
    """Verifies ``(public key, message, signature)`` triples, on a worker thread."""

    def __init__(self, *, threads: int = 1) -> None:
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="rondevu-verify")
            if threads > 0
            else None
        )
        self._queued: list[tuple[_Check, asyncio.Future[bool]]] = []
        self._busy = False

    async def verify(self, public_key: str, message: str, signature: str) -> bool:
        """True when ``signature`` is ``public_key``'s signature of ``message``."""
        if self._executor is None:
            return verify_signature(public_key, message, signature)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queued.append(((public_key, message, signature), future))
        if not self._busy:
            self._send_batch(loop, self._executor)
        return await future

    def _send_batch(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        batch, self._queued = self._queued, []
        self._busy = True
        done = executor.submit(_verify_all, [check for check, _ in batch])
        done.add_done_callback(
            lambda outcome: loop.call_soon_threadsafe(self._deliver, loop, batch, outcome)
        )

    def _deliver(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[_Check, asyncio.Future[bool]]],
        outcome: Future[list[bool]],
    ) -> None:
        self._busy = False
        error = outcome.exception()
        results = outcome.result() if error is None else [False] * len(batch)
        for (_, future), valid in zip(batch, results, strict=True):
            if future.done():  # the caller was cancelled
                continue
            if error is None:
                future.set_result(valid)
            else:
                future.set_exception(error)
        if self._queued:
            if self._executor is not None:
                self._send_batch(loop, self._executor)
            else:  # closed meanwhile: finish the stragglers inline
                for (key, message, signature), waiting in self._queued:
                    if not waiting.done():
                        waiting.set_result(verify_signature(key, message, signature))
                self._queued = []

    def close(self) -> None:
        """Stop the worker thread (idempotent); later checks run inline."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
