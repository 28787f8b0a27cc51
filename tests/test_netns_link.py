"""Peers on two test hosts (network namespaces joined by a veth link, made by the test):
our server and CLI peers work across a real link, not only on loopback, and a line
typed around a short cut of the link arrives once the link is back.

Skips with a reason where namespaces cannot be made (not root); CI runs as root.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests import cli_testing, netns_testing
from tests.cli_testing import DEADLINE_S, Lines, Processes, no_traceback, start_cli
from tests.netns_testing import TestHosts, serve_on

processes = cli_testing.processes

if (_why := netns_testing.unavailable()) is not None:
    pytestmark = pytest.mark.skip(reason=_why)


@pytest.fixture
def hosts() -> Iterator[TestHosts]:
    with TestHosts() as made:
        yield made


def test_peers_on_two_hosts_talk_and_survive_a_short_cut(
    hosts: TestHosts, processes: Processes
) -> None:
    a, b = hosts.addresses["a"], hosts.addresses["b"]
    url = serve_on(hosts, "a", processes)
    username = f"hosta-{os.getpid()}"
    publisher = start_cli(
        "publish", "chat:1.0.0", "--username", username, "--api-url", url,
        "--host-address", a, "--ice-servers", "none", prefix=hosts.exec_prefix("a"),
    )  # fmt: skip
    processes.append(publisher)
    Lines(publisher.stderr).wait_for(r"published chat:1\.0\.0@")
    peer = start_cli(
        "connect", f"chat:1.0.0@{username}", "--api-url", url, "--host-address", b,
        "--ice-servers", "none", stdin=subprocess.PIPE, prefix=hosts.exec_prefix("b"),
    )  # fmt: skip
    processes.append(peer)
    peer_status = Lines(peer.stderr)
    peer_status.wait_for(r"connected to chat:1\.0\.0@")
    assert peer.stdin is not None
    echoes = Lines(peer.stdout)

    peer.stdin.write(b"across the link\n")
    peer.stdin.flush()
    assert echoes.wait_for("across") == "across the link"

    hosts.cut()
    peer.stdin.write(b"while it was down\n")
    peer.stdin.flush()
    hosts.restore()
    assert echoes.wait_for("while it was down") == "while it was down"

    peer.stdin.close()
    assert peer.wait(DEADLINE_S) == 0
    assert no_traceback(peer_status.rest())
