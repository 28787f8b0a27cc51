"""The session layer across a real link: CLI peers on two test hosts (network namespaces
joined by a veth link, made by the test), 10,000 lines sent while the link is cut three
times (twice taken down, once made silent with ``tc netem loss 100%`` where the kernel
has netem, else taken down too), every echo back exactly once and in order.

Each cut lasts until the connecting peer reports the loss (its heartbeat), so the test
waits on output, never on a clock.  Skips with a reason where namespaces cannot be
made (not root).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from tests import cli_testing, netns_testing
from tests.cli_testing import Lines, Processes, no_traceback, start_cli
from tests.netns_testing import TestHosts, serve_on

processes = cli_testing.processes

if (_why := netns_testing.unavailable()) is not None:
    pytestmark = pytest.mark.skip(reason=_why)

TOTAL = 10_000
BOUND_S = 90.0


@pytest.fixture
def hosts() -> Iterator[TestHosts]:
    with TestHosts() as made:
        yield made


class Collector(threading.Thread):
    """Reads every stdout line of a process as it comes (blocking reads in a thread,
    until EOF), so its pipe never fills; `reached(n)` is set once ``n`` lines arrived."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.lines: list[str] = []
        self._fd = fd
        self._marks: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def reached(self, count: int) -> threading.Event:
        with self._lock:
            mark = self._marks.setdefault(count, threading.Event())
            if len(self.lines) >= count:
                mark.set()
            return mark

    def run(self) -> None:
        pending = b""
        while chunk := os.read(self._fd, 65536):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            with self._lock:
                for line in complete:
                    self.lines.append(line.decode())
                    mark = self._marks.get(len(self.lines))
                    if mark is not None:
                        mark.set()


def test_ten_thousand_lines_cross_three_cuts_exactly_once_in_order(
    hosts: TestHosts, processes: Processes
) -> None:
    a, b = hosts.addresses["a"], hosts.addresses["b"]
    url = serve_on(hosts, "a", processes)
    username = f"stream-{os.getpid()}"
    publisher = start_cli(
        "publish", "stream:1.0.0", "--username", username, "--api-url", url,
        "--host-address", a, "--ice-servers", "none", stdout=subprocess.DEVNULL,
        prefix=hosts.exec_prefix("a"),
    )  # fmt: skip
    processes.append(publisher)
    Lines(publisher.stderr).wait_for(r"published stream:1\.0\.0@")
    peer = start_cli(
        "connect", f"stream:1.0.0@{username}", "--api-url", url, "--host-address", b,
        "--ice-servers", "none", "--reconnect-attempts", "0", stdin=subprocess.PIPE,
        prefix=hosts.exec_prefix("b"),
    )  # fmt: skip
    processes.append(peer)
    status = Lines(peer.stderr)
    status.wait_for(r"connected to stream:1\.0\.0@")
    assert peer.stdin is not None
    assert peer.stdout is not None
    echoes = Collector(peer.stdout.fileno())
    echoes.start()
    # 48,890 bytes: within a pipe's buffer, so this never blocks on the peer.
    peer.stdin.write("".join(f"{n}\n" for n in range(TOTAL)).encode())
    peer.stdin.flush()

    def silence() -> None:
        try:
            hosts.lose(100)
        except RuntimeError:  # a kernel without sch_netem: the link goes down instead
            hosts.cut()

    cuts: list[tuple[Callable[[], None], Callable[[], None]]] = [
        (hosts.cut, hosts.restore),
        (silence, hosts.restore),
        (hosts.cut, hosts.restore),
    ]
    for n, (cut, restore) in zip((2_500, 5_000, 7_500), cuts, strict=True):
        assert echoes.reached(n).wait(BOUND_S), f"only {len(echoes.lines)} echoes"
        cut()
        try:
            status.wait_for("link lost", timeout=20)  # the heartbeat noticed
        finally:
            restore()
        status.wait_for("reconnected", timeout=30)
    assert echoes.reached(TOTAL).wait(BOUND_S), f"only {len(echoes.lines)} echoes"
    peer.stdin.close()
    assert peer.wait(30) == 0
    echoes.join(10)
    assert echoes.lines == [str(n) for n in range(TOTAL)]
    rest = status.rest()
    assert no_traceback(rest)
    assert not any("not delivered" in line or "not confirmed" in line for line in rest)
