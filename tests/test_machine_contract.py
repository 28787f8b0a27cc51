"""Every machine of the core fulfils the one contract of `rondevu_core.machine`.

The assignments below are checked by ``mypy --strict`` (CI runs it over tests/): a
machine whose ``handle``, ``get_timer``, ``handle_timer``, ``next_action`` or
``next_event`` drifted from the contract fails the type check.  The test itself drives
each machine through the contract alone, as a custom runtime would.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

from rondevu_core.actions import Action, SendRpc
from rondevu_core.batcher import (
    BatcherAction,
    BatcherEvent,
    BatcherInput,
    RpcBatcher,
    SendBatch,
    SubmitCall,
)
from rondevu_core.config import PoolConfig
from rondevu_core.connection import Connection
from rondevu_core.events import Event
from rondevu_core.inputs import Connect, Input, StartFilling
from rondevu_core.machine import Machine
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
