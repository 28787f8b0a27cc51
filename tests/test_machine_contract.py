"""Every machine of the core fulfils the one contract of `rondevu_core.machine`.

The assignments below are checked by ``mypy --strict`` (CI runs it over tests/): a
machine whose ``handle``, ``get_timer``, ``handle_timer``, ``next_action`` or
``next_event`` drifted from the contract fails the type check.  The test itself drives
each machine through the contract alone, as a custom runtime would.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

import pytest

from rondevu_core.actions import Action, SendRpc
from rondevu_core.batcher import (
    BatcherAction,
    BatcherEvent,
    BatcherInput,
    RpcBatcher,
    SendBatch,
    SubmitCall,
)
from rondevu_core.config import ConnectionConfig, PoolConfig
from rondevu_core.connection import Connection
from rondevu_core.delivery import DeliverySession, SessionConfig
from rondevu_core.delivery.machine import (
    ChannelUp,
    SendPayload,
    SessionAction,
    SessionEvent,
    SessionInput,
    Transmit,
)
from rondevu_core.errors import UsageError
from rondevu_core.events import Event
from rondevu_core.ice_exchange import EnableUploads, ExchangeInput, IceExchange, StartPolling
from rondevu_core.inputs import Connect, Input, LocalCandidate, StartFilling
from rondevu_core.machine import Machine
from rondevu_core.outbox import Outbox
from rondevu_core.pool import OfferPool
from rondevu_core.rpc import Method, RpcRequest
from rondevu_core.rules.fqn import ServiceFqn

SERVICE = ServiceFqn(service="chat", version="1.0.0", username="alice")


A = TypeVar("A")
E = TypeVar("E")


def drain(machine: Machine[Any, A, E]) -> tuple[list[A], list[E]]:
    """Everything the machine queued, through the contract only."""
    actions: list[A] = []
    events: list[E] = []
    while (action := machine.next_action()) is not None:
        actions.append(action)
    while (event := machine.next_event()) is not None:
        events.append(event)
    return actions, events


def test_connection_and_pool_fit_the_contract() -> None:
    answerer: Machine[Input, Action, Event] = Connection.answerer(
        SERVICE, unit_random=random.Random(0).random
    )
    pool: Machine[Input, Action, Event] = OfferPool(
        PoolConfig(service=SERVICE), unit_random=random.Random(0).random
    )
    answerer.handle(Connect(now=5))
    actions, _ = drain(answerer)
    assert any(isinstance(a, SendRpc) and a.request.method is Method.GET_SERVICE for a in actions)
    assert answerer.get_timer() is not None  # the connection timeout is armed
    pool.handle(StartFilling(now=5))
    actions, _ = drain(pool)
    assert actions  # the pool starts creating its offers


def test_the_batcher_fits_the_contract() -> None:
    batcher: Machine[BatcherInput, BatcherAction, BatcherEvent] = RpcBatcher()
    batcher.handle(SubmitCall(now=0, call_id=1, request=RpcRequest(method=Method.POLL)))
    assert batcher.get_timer() == 50
    batcher.handle_timer(50)
    action = batcher.next_action()
    assert isinstance(action, SendBatch)
    assert [c.call_id for c in action.calls] == [1]
    assert batcher.next_event() is None  # settles only with the reply


def test_the_ice_exchange_fits_the_contract() -> None:
    """The layered machine: forwarded core inputs and its owner's commands, through
    ``handle`` alone; its output lands on the outbox it shares with its owner."""
    outbox = Outbox()
    exchange: Machine[ExchangeInput, Action, Event] = IceExchange(
        outbox=outbox,
        config=ConnectionConfig(),
        connection_id=1,
        pc_id=2,
        service_fqn=str(SERVICE),
    )
    candidate = {"candidate": "candidate:1 1 udp 1 10.0.0.1 5000 typ host", "sdpMid": "0"}
    exchange.handle(LocalCandidate(now=0, pc_id=2, candidate=candidate))
    exchange.handle(EnableUploads(offer_id="o" * 16))
    exchange.handle(StartPolling(now=0))
    actions, events = drain(exchange)
    methods = [a.request.method for a in actions if isinstance(a, SendRpc)]
    assert methods == [Method.ADD_ICE_CANDIDATES, Method.GET_ICE_CANDIDATES]
    assert [e.name for e in events] == ["ice:polling:started"]
    assert exchange.get_timer() is not None  # the polling timeout
    with pytest.raises(UsageError, match="does not take"):
        exchange.handle(Connect(now=0))  # type: ignore[arg-type]


def test_the_delivery_session_fits_the_contract() -> None:
    session: Machine[SessionInput, SessionAction, SessionEvent] = DeliverySession(SessionConfig())
    session.handle(ChannelUp(now=0))
    session.handle(SendPayload(now=0, data="hi"))
    actions, events = drain(session)
    assert len(actions) == 2  # HELLO, then the DATA frame
    assert all(isinstance(a, Transmit) for a in actions)
    assert events == []
    assert session.get_timer() is not None  # heartbeat and silence
