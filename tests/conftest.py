"""Fixtures shared by every suite.

``anyio_backend`` is asyncio everywhere: aiortc and the server's storage drivers run on
asyncio only.  ``inprocess_server`` is a real `RondevuServer` (SQLite in memory) for
tests that reach it through `InProcessTransport`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer


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
