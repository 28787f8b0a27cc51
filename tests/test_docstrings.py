"""The public API explains itself: ``help(rondevu)`` and ``help(rondevu.Rondevu)`` read
as documentation for people, every public name has its own docstring, none sends the
reader to an id they cannot look up, and the class's example works.

The example runs against a real `RondevuServer` (in process) with real aiortc peers on
loopback; waiting is on events under ``anyio.fail_after``, never on sleeps.
"""

from __future__ import annotations

import inspect
import pydoc
import re
import textwrap
from typing import Any

import anyio
import pytest

import rondevu
from rondevu import InProcessTransport, Rondevu
from rondevu_server.server import RondevuServer

# Section signs and bug ids refer to texts a user of the package does not have.
_INTERNAL = re.compile(r"§|\b[BSD]\d{1,2}\b|PROTOCOL\.md|see the module docstring")


def _public_names() -> list[str]:
    return [name for name in rondevu.__all__ if name != "__version__"]


@pytest.mark.parametrize("name", _public_names())
def test_every_public_name_has_its_own_docstring(name: str) -> None:
    obj = getattr(rondevu, name)
    doc = obj.__doc__
    assert doc is not None, name
    assert doc.strip(), name
    assert not _INTERNAL.search(doc), (name, _INTERNAL.findall(doc))


@pytest.mark.parametrize("name", ["Rondevu", "DurableConnection", "RondevuAPI", "Identity"])
def test_public_methods_say_what_they_do_without_internal_ids(name: str) -> None:
    cls = getattr(rondevu, name)
    for attribute, value in vars(cls).items():
        if attribute.startswith("_"):
            continue
        function = getattr(value, "__func__", value)
        if isinstance(function, property):
            function = function.fget
        if not callable(function):
            continue
        doc = inspect.getdoc(function)
        assert doc, f"{name}.{attribute}"
        assert not _INTERNAL.search(doc), (f"{name}.{attribute}", _INTERNAL.findall(doc))


def test_help_of_the_package_starts_with_what_it_is_and_an_example() -> None:
    text = pydoc.render_doc(rondevu, renderer=pydoc.TextDoc())
    assert "find peers by name" in text
    assert "Rondevu.connect(" in text
    assert not _INTERNAL.search(rondevu.__doc__ or "")


def test_rondevu_explains_itself_and_says_what_it_raises() -> None:
    doc = inspect.getdoc(Rondevu) or ""
    for word in ("connect_to_service", "publish_service", "incoming", "async with"):
        assert word in doc, word
    for error in ("RpcError", "TransportError", "UsageError"):
        assert error in doc, error
    for method in ("connect", "connect_to_service", "find_service", "start_filling"):
        assert "Raises" in (inspect.getdoc(getattr(Rondevu, method)) or ""), method


def _class_example() -> str:
    """The code block of `Rondevu`'s docstring (after the line ending in ``::``)."""
    doc = inspect.getdoc(Rondevu) or ""
    found = re.search(r"::\n\n((?:    .*\n|\n)+)", doc + "\n")
    assert found is not None
    return textwrap.dedent(found.group(1))


@pytest.mark.anyio
async def test_the_class_example_echoes(inprocess_server: RondevuServer) -> None:
    example = _class_example()
    shown = 'Rondevu.connect("http://127.0.0.1:3000", username="alice")'
    assert shown in example
    # The example as written, on the in-process server and with WebRTC on loopback.
    local = (
        'Rondevu.connect(transport=InProcessTransport(server), username="alice", '
        'ice_servers=[], host_addresses=["127.0.0.1"])'
    )
    code = "async def publisher(server):\n" + textwrap.indent(example.replace(shown, local), "    ")
    namespace: dict[str, Any] = {"Rondevu": Rondevu, "InProcessTransport": InProcessTransport}
    exec(code, namespace)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(namespace["publisher"], inprocess_server)
            async with Rondevu.connect(
                transport=InProcessTransport(inprocess_server),
                ice_servers=[],
                host_addresses=["127.0.0.1"],
            ) as bob:
                conn = await bob.connect_to_service("chat:1.0.0@alice")
                conn.send("ping")
                await conn.wait_connected()
                assert await conn.receive() == "ping"
            group.cancel_scope.cancel()
