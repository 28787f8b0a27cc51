"""A publisher peer in its own process, for the end-to-end tests that kill it.

It publishes ``SERVICE`` as a fixed identity (username and Ed25519 seed from the
command line), so a publisher started again after ``SIGKILL`` is the same user to the
server and to the answerer that reconnects to it.  WebRTC stays on 127.0.0.1 (no ICE
servers, host candidates on loopback only).

Every peer message is echoed back (``echo:`` prefixed, same type) and reported on
stdout as one JSON line, flushed at once, which is how the test observes this process:

    {"event": "ready", "offers": 1}                        offers published
    {"event": "connected", "offer_id": "..."}              a peer connected
    {"event": "message", "type": "str", "data": "..."}     received (bytes: hex)

    python tests/peers/publisher.py URL USERNAME SEED_HEX SERVICE [POLL_INTERVAL_MS]
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from rondevu import DurableConnection, Rondevu
from rondevu_core import events as ev
from rondevu_core.rules.signing import KeyPair


def report(**fields: Any) -> None:
    """One JSON line on stdout, flushed (the test reads it as it comes)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def serve_connection(conn: DurableConnection) -> None:
    """Echo every message of ``conn`` and report it."""

    def on_message(event: ev.Event) -> None:
        assert isinstance(event, ev.Message)
        data = event.data
        if isinstance(data, bytes):
            report(event="message", type="bytes", data=data.hex())
            conn.send(b"echo:" + data)
        else:
            report(event="message", type="str", data=data)
            conn.send("echo:" + data)

    conn.on("message", on_message)


async def main(url: str, username: str, seed_hex: str, service: str, poll_ms: int) -> None:
    keypair = KeyPair.from_seed(bytes.fromhex(seed_hex))
    async with Rondevu.connect(
        url,
        username=username,
        keypair=keypair,
        ice_servers=[],
        host_addresses=["127.0.0.1"],
    ) as rondevu:
        rondevu.on(
            "offers:published",
            lambda event: report(event="ready", offers=len(event.offer_ids)),
        )
        rondevu.publish_service(service, max_offers=1, poll_interval_ms=poll_ms)
        await rondevu.start_filling()
        async for conn in rondevu.incoming():
            serve_connection(conn)
            report(event="connected", offer_id=conn.offer_id)


if __name__ == "__main__":
    url, username, seed_hex, service = sys.argv[1:5]
    poll_ms = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    anyio.run(main, url, username, seed_hex, service, poll_ms)
