"""The embedding example really runs the core to CONNECTED with its own loop and clock."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rondevu_core.connection import State

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embed_sync_loop.py"


def test_example_reaches_connected_and_replays_the_buffer() -> None:
    spec = importlib.util.spec_from_file_location("embed_sync_loop", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conn, names = module.run()
    assert conn.state is State.CONNECTED
    assert "connected" in names
    assert names.index("message:buffered") < names.index("message:replayed")
