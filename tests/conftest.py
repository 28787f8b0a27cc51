"""Fixtures shared by every suite.

``anyio_backend`` is asyncio everywhere: aiortc and the server's storage drivers run on
asyncio only.  ``inprocess_server`` is a real `RondevuServer` (SQLite in memory) for
tests that reach it through `InProcessTransport`.

Hypothesis runs with no per-example deadline and without the too-slow health check: the
test machines are shared and noisy (a CI run beside other jobs), and a property is about
what holds, not how fast one example is generated.  Timing goals live in bench/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer

settings.register_profile("rondevu", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rondevu")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def inprocess_server() -> AsyncIterator[RondevuServer]:
    server = await RondevuServer.open(ServerConfig())
    try:
        yield server
    finally:
        await server.aclose()
