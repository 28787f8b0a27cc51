"""docs/deploy.md, followed: the files it shows are the ones in deploy/, its container
recipe starts a server that passes its own health check, its nginx site carries two
real peers to a real ``rondevu serve``, and its TURN credential recipes agree.

Real processes throughout (``rondevu serve``, ``rondevu publish``/``connect``, Debian's
nginx run as this user with a temporary prefix), all on 127.0.0.1; synchronisation is by
reading their output lines, never by sleeping.  The systemd unit cannot run here: its
command is the container's.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from rondevu.cli_options import ice_servers
from rondevu_core.rules.ice import IceConfiguration
from rondevu_server.config import ServerConfig
from tests import cli_testing
from tests.cli_testing import (
    DEADLINE_S,
    ROOT,
    Lines,
    Processes,
    cli_env,
    closed_url,
    start_cli,
)

processes = cli_testing.processes

DEPLOY = ROOT / "deploy"
GUIDE = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    """The guide's fenced code blocks of ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE, re.M | re.S)


def free_port() -> int:
    return int(closed_url().rsplit(":", 1)[1])


# -- the guide shows the files as they are --------------------------------------------------


@pytest.mark.parametrize(
    ("language", "file"),
    [("nginx", "nginx-rondevu.conf"), ("dockerfile", "Dockerfile"), ("ini", "rondevu.service")],
)
def test_the_guide_quotes_the_deploy_files_verbatim(language: str, file: str) -> None:
    assert (DEPLOY / file).read_text(encoding="utf-8") in blocks(language)


def test_the_guide_lists_every_setting() -> None:
    for name in ServerConfig().env_names():
        assert f"`{name}`" in GUIDE, name
    for field in dataclasses.fields(ServerConfig):
        if field.type in ("int", "float") and not field.name.startswith("db_"):
            default = getattr(ServerConfig(), field.name)
            row = re.search(rf"^\| `RONDEVU_{field.name.upper()}` \|.*$", GUIDE, re.M)
            assert row is not None, field.name
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert f"`{shown}`" in row.group(0), (field.name, default)


# -- the container recipe ---------------------------------------------------------------------


def dockerfile() -> dict[str, Any]:
    """The recipe's ENV settings, CMD and HEALTHCHECK command."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", text, re.M):
        for word in shlex.split(line):
            name, value = word.split("=", 1)
            env[name] = value
    [cmd] = re.findall(r"^CMD (\[.*\])$", text, re.M)
    [check] = re.findall(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M)
    return {"env": env, "cmd": json.loads(cmd), "healthcheck": json.loads(check)}


def test_the_container_command_serves_and_passes_its_health_check(
    processes: Processes, tmp_path: Path
) -> None:
    recipe = dockerfile()
    cmd = recipe["cmd"]
    assert cmd[:2] == ["rondevu", "serve"]
    # The image's settings, but on loopback, a free port and a temporary database:
    # a test must not listen on every interface or on a fixed port.
    env = {
        **recipe["env"],
        "RONDEVU_HOST": "127.0.0.1",
        "RONDEVU_PORT": str(free_port()),
        "RONDEVU_DB": str(tmp_path / "rondevu.db"),
    }
    assert set(recipe["env"]) >= {"RONDEVU_HOST", "RONDEVU_PORT", "RONDEVU_DB"}
    server = start_cli(*cmd[1:], env=env)  # ``rondevu`` is ``python -m rondevu.cli``
    processes.append(server)
    line = Lines(server.stderr).wait_for(r"^rondevu serve: listening on ")
    url = f"http://127.0.0.1:{env['RONDEVU_PORT']}"
    assert line == f"rondevu serve: listening on {url}"

    health = httpx.get(f"{url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    check = recipe["healthcheck"]
    assert check[0] == "python"
    ran = subprocess.run(
        [sys.executable, *check[1:]], env=cli_env(env), timeout=DEADLINE_S, check=False
    )
    assert ran.returncode == 0
    assert (tmp_path / "rondevu.db").exists()

    # The guide's readiness check reads the database and answers success.
    [body] = re.findall(r"-d '(\{\"method\":\"getUser\".*?\})'", GUIDE)
    ready = httpx.post(f"{url}/rpc", content=body, timeout=10)
    assert ready.json() == {
        "success": True,
        "result": {"username": "health-check", "available": True},
    }


def test_the_health_check_fails_when_nothing_serves() -> None:
    check = dockerfile()["healthcheck"]
    env = cli_env({"RONDEVU_PORT": str(free_port())})
    ran = subprocess.run(
        [sys.executable, *check[1:]], env=env, capture_output=True, timeout=DEADLINE_S
    )
    assert ran.returncode != 0


# -- behind nginx -------------------------------------------------------------------------------


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None
    )


def nginx_site(listen: int, upstream: int) -> str:
    """The guide's nginx site with TLS taken out: plain HTTP on ``127.0.0.1:listen``,
    forwarding to the server on ``upstream``.  Every change must apply exactly once, so
    a guide that drifts from this shape fails here instead of being tested half."""
    [site] = blocks("nginx")
    changes = [
        (r"server \{\n    listen 80;.*?\n\}\n", ""),  # the HTTP-to-HTTPS redirect
        (r"    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{listen};\n"),
        (r"    listen \[::\]:443 ssl http2;\n", ""),
        (r"    ssl_certificate [^\n]*\n", ""),
        (r"    ssl_certificate_key [^\n]*\n", ""),
        (r"    ssl_protocols [^\n]*\n", ""),
        (r"server 127\.0\.0\.1:3000;", f"server 127.0.0.1:{upstream};"),
    ]
    for pattern, replacement in changes:
        site, made = re.subn(pattern, replacement, site, flags=re.S)
        assert made == 1, pattern
    assert "ssl" not in site
    return site


def nginx_conf(prefix: Path, site: str) -> str:
    """A whole nginx.conf around ``site``: in the foreground, every file under ``prefix``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # else workers would be nobody
    temp = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        "error_log stderr notice;\nevents { worker_connections 256; }\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp}{site}}}\n"
    )


def test_two_peers_connect_through_the_guides_nginx(processes: Processes, tmp_path: Path) -> None:
    nginx = _nginx()
    if nginx is None:
        if os.environ.get("RONDEVU_TEST_REQUIRE_NGINX"):  # CI installed it: never skip there
            pytest.fail("RONDEVU_TEST_REQUIRE_NGINX is set but nginx is not installed")
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light; CI does)")
    # The server as the guide runs it behind a proxy.
    server = start_cli("serve", "--port", "0", env={"RONDEVU_TRUST_FORWARDED_FOR": "1"})
    processes.append(server)
    ready = Lines(server.stderr).wait_for(r"^rondevu serve: listening on ")
    upstream = int(ready.rsplit(":", 1)[1])

    listen = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, nginx_site(listen, upstream)), encoding="utf-8")
    proxy = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    processes.append(proxy)
    Lines(proxy.stderr).wait_for(r"start worker process")
    url = f"http://127.0.0.1:{listen}"

    health = httpx.get(f"{url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"

    # Two real peers, signaling through nginx only.
    name = f"alice-{os.getpid()}"
    peer = ["--host-address", "127.0.0.1", "--api-url", url]
    alice = start_cli("publish", "chat:1.0.0", "--username", name, *peer)
    processes.append(alice)
    Lines(alice.stderr).wait_for(rf"published chat:1\.0\.0@{name}")
    bob = start_cli("connect", f"chat:1.0.0@{name}", *peer, stdin=subprocess.PIPE)
    processes.append(bob)
    assert bob.stdin is not None
    bob.stdin.write(b"hello through nginx\n")
    assert Lines(bob.stdout).wait_for(r"hello") == "hello through nginx"  # alice's echo
    bob.stdin.close()
    assert bob.wait(DEADLINE_S) == 0

    log = (tmp_path / "access.log").read_text(encoding="utf-8")
    assert re.search(r'"POST /rpc HTTP/1\.1" 200', log), log


# -- TURN credentials ---------------------------------------------------------------------------


class _FixedTime:
    def __init__(self, now: int) -> None:
        self.now = now

    def time(self) -> float:
        return float(self.now)


def test_the_two_turn_credential_recipes_agree_and_the_cli_takes_the_file(
    tmp_path: Path,
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    shell = next(block for block in blocks("sh") if "openssl dgst" in block)
    subprocess.run(["sh", "-c", shell], cwd=tmp_path, check=True, timeout=DEADLINE_S)
    made = tmp_path / "turn.json"
    configuration = ice_servers(str(made))  # what --ice-servers turn.json reads
    assert isinstance(configuration, IceConfiguration)
    [turn] = [server for server in configuration.servers if server.is_turn]
    assert turn.username is not None
    expiry, name = turn.username.split(":", 1)
    assert name == "alice"

    python = next(block for block in blocks("python") if "def turn_credentials" in block)
    namespace: dict[str, Any] = {}
    exec(python, namespace)
    namespace["time"] = _FixedTime(int(expiry) - 3600)
    secret = re.search(r"^secret=(\S+)$", shell, re.M)
    assert secret is not None
    entry = namespace["turn_credentials"](secret.group(1), "alice")
    assert entry["username"] == turn.username
    assert entry["credential"] == turn.credential
    # And both are what coturn's use-auth-secret checks: base64(HMAC-SHA1(secret, name)).
    digest = hmac.new(secret.group(1).encode(), turn.username.encode(), hashlib.sha1).digest()
    assert turn.credential == base64.b64encode(digest).decode()
    assert "use-auth-secret" in GUIDE
    assert f"static-auth-secret={secret.group(1)}" in GUIDE
