"""Two test hosts on one machine: network namespaces joined by a veth link, made and
removed by the test that uses them (`TestHosts`).

A process runs on a host through `TestHosts.exec_prefix` (``ip netns exec NAME``); each
host has its own loopback and one address on the link, so traffic between the hosts
crosses the link, and `cut` / `restore` / `lose` fail it the way a real network does
(the interface goes down; or ``tc netem`` drops packets).  Needs root (CAP_NET_ADMIN);
`unavailable` says why not, for a skip.  Everything made is removed on exit, even after
a failure, and the hosts' names carry the test process id, so parallel runs never meet.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from types import TracebackType

from tests.cli_testing import Lines, Processes, start_cli

__all__ = ["TestHosts", "serve_on", "unavailable"]

_IP = shutil.which("ip") or "/usr/sbin/ip"
_TC = shutil.which("tc") or "/usr/sbin/tc"
_COMMAND_S = 10.0
_count = itertools.count()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=_COMMAND_S, check=False)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can): for ``pytest.skip``."""
    if not os.path.exists(_IP):
        return "iproute2's ip is not installed (Debian: apt-get install iproute2)"
    probe = f"rdvprobe{os.getpid()}"
    made = _run(_IP, "netns", "add", probe)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip() or 'not root?'}"
    _run(_IP, "netns", "del", probe)
    return None


class TestHosts:
    """Hosts ``a`` and ``b`` on one /24 link (``a`` is .1, ``b`` is .2).

    Use as a context manager; `cut`, `restore` and `lose` act on ``a``'s end of the link,
    which stops (or thins) traffic in both directions.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self) -> None:
        n = next(_count)
        tag = f"{os.getpid() % 100000}{n}"
        self.names = {"a": f"rdv{tag}a", "b": f"rdv{tag}b"}
        subnet = 10 + (os.getpid() * 7 + n) % 240
        self.addresses = {"a": f"10.213.{subnet}.1", "b": f"10.213.{subnet}.2"}
        self._made: list[str] = []

    def __enter__(self) -> TestHosts:
        try:
            for host in ("a", "b"):
                self._check(_IP, "netns", "add", self.names[host])
                self._made.append(self.names[host])
                self._check(*self.exec_prefix(host), _IP, "link", "set", "lo", "up")
            a, b = self.names["a"], self.names["b"]
            self._check(
                _IP, "-n", a, "link", "add", "link0", "type", "veth", "peer", "name",
                "link0", "netns", b,
            )  # fmt: skip
            for host in ("a", "b"):
                prefix = self.exec_prefix(host)
                self._check(
                    *prefix, _IP, "addr", "add", f"{self.addresses[host]}/24", "dev", "link0"
                )
                self._check(*prefix, _IP, "link", "set", "link0", "up")
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove()

    def exec_prefix(self, host: str) -> tuple[str, ...]:
        """The command prefix that runs a program on ``host`` (``a`` or ``b``)."""
        return (_IP, "netns", "exec", self.names[host])

    def cut(self) -> None:
        """Take the link down: nothing crosses it until `restore`."""
        self._check(_IP, "-n", self.names["a"], "link", "set", "link0", "down")

    def restore(self) -> None:
        """Bring the link back up, without any packet loss `lose` set."""
        self._check(_IP, "-n", self.names["a"], "link", "set", "link0", "up")
        self._lose_none()

    def lose(self, percent: int) -> None:
        """Drop ``percent`` % of the packets leaving ``a`` over the link (``tc netem``);
        100 keeps the link up but silent, as a peer behind a dead router."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0..100")
        self._check(
            *self.exec_prefix("a"), _TC, "qdisc", "replace", "dev", "link0", "root",
            "netem", "loss", f"{percent}%",
        )  # fmt: skip

    def _lose_none(self) -> None:
        _run(*self.exec_prefix("a"), _TC, "qdisc", "del", "dev", "link0", "root")

    def _check(self, *argv: str) -> None:
        done = _run(*argv)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")

    def _remove(self) -> None:
        # Deleting a namespace deletes its end of the veth pair, and with it the other.
        for name in reversed(self._made):
            _run(_IP, "netns", "del", name)
        self._made.clear()


def serve_on(hosts: TestHosts, host: str, processes: Processes) -> str:
    """``rondevu serve`` on ``host``'s link address (a free port); its URL, once it
    listens.  The process joins ``processes``, which stops it."""
    address = hosts.addresses[host]
    server = start_cli("serve", "--host", address, "--port", "0", prefix=hosts.exec_prefix(host))
    processes.append(server)
    found = re.search(r"listening on (http://\S+)", Lines(server.stderr).wait_for("listening on"))
    assert found is not None
    return found.group(1)
