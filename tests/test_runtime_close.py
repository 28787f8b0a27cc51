"""`PeerHost` closing a real aiortc peer connection while the machine still reacts.

aiortc's ``close()`` emits its last state changes synchronously, from inside itself, and
the runtime feeds them to the machine at once.  If the machine answers with an action for
that peer connection (it does: an unrequested ``closed`` is a failure, and failures
close the peer connection), that action must be dropped quietly: raising back into aiortc
aborts its close half-way, and every later ``close()`` then waits for ever.
"""

from __future__ import annotations

import anyio
import pytest

from rondevu.runtime import PeerHost
from rondevu_core import actions, inputs
from rondevu_core.config import DataChannelOptions
from rondevu_core.rules.ice import NO_ICE_SERVERS

pytestmark = pytest.mark.anyio


async def test_action_during_close_is_dropped_and_close_completes() -> None:
    fed: list[inputs.Input] = []
    described = anyio.Event()
    host: PeerHost

    def feed(event: inputs.Input) -> None:
        fed.append(event)
        if isinstance(event, inputs.LocalDescriptionReady):
            described.set()
        if isinstance(event, inputs.PeerConnectionStateChanged) and event.state == "closed":
            # What a machine does on an unrequested close: act on that peer connection.
            host.execute(actions.ClosePeerConnection(pc_id=1))

    host = PeerHost(feed=feed, clock=lambda: 0, host_addresses=["127.0.0.1"])
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            host.bind(group)
            host.execute(actions.CreatePeerConnection(pc_id=1, ice=NO_ICE_SERVERS))
            host.execute(
                actions.CreateDataChannel(pc_id=1, label="default", options=DataChannelOptions())
            )
            host.execute(actions.CreateOffer(pc_id=1))
            await described.wait()
            peer = host.peer(1)
            assert peer is not None
            # Stop the worker (as a cancelled caller does); its finally closes the peer.
            group.cancel_scope.cancel()
        assert peer is not None
        # The close finished: a second close returns at once instead of hanging.
        with anyio.fail_after(5):
            await peer.close()
    assert peer.connection_state == "closed"
    assert any(
        isinstance(e, inputs.PeerConnectionStateChanged) and e.state == "closed" for e in fed
    )
