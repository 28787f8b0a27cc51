"""Option checking of the ``rondevu`` command: every bad value is one line, exit 2.

Most cases call `rondevu.cli.main` in this process (the same code the console script
runs, and fast: nothing here reaches the network); a few run the real command as a
subprocess to show the whole output is that one line, with no traceback.  The value
checks themselves are pure rules, tested with hypothesis.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rondevu.cli import COMMANDS, _report, build_parser, main
from rondevu.cli_options import (
    DEFAULT_API_URL,
    EXIT_USAGE,
    CliError,
    api_url,
    count,
    ice_servers,
    resolve_api_url,
    seconds,
    show_sender,
)
from rondevu_core.errors import ValidationError
from rondevu_core.rules.ice import IceConfiguration, IceServer, IceTransportPolicy
from tests.cli_testing import no_traceback, run_cli, stderr_lines

URL = ["--api-url", "http://127.0.0.1:9"]

# (arguments, text the one line must contain: the option and the value it names)
BAD_VALUES = [
    (["connect", "chat:1.0.0@"], "argument FQN: 'chat:1.0.0@': the username after '@' is empty"),
    (["connect", ":1.0.0@alice"], "argument FQN: ':1.0.0@alice'"),
    (["connect", "chat:@alice"], "argument FQN: 'chat:@alice'"),
    (["connect", "not a service"], "argument FQN: 'not a service'"),
    (["connect", "chat:1.0.0", "--connect-timeout", "-5"], "--connect-timeout: '-5' is not"),
    (["connect", "chat:1.0.0", "--connect-timeout", "soon"], "--connect-timeout: 'soon' is not"),
    (["connect", "chat:1.0.0", "--connect-timeout", "nan"], "--connect-timeout: 'nan' is not"),
    (["connect", "chat:1.0.0", "--reconnect-attempts", "-1"], "--reconnect-attempts: '-1'"),
    (["connect", "chat:1.0.0", "--api-url", "http://127.0.0.1:99999"], "'http://127.0.0.1:99999'"),
    (["connect", "chat:1.0.0", "--api-url", "http://127.0.0.1:0"], "'http://127.0.0.1:0'"),
    (["connect", "chat:1.0.0", "--api-url", "http://h:port"], "'http://h:port'"),
    (["connect", "chat:1.0.0", "--api-url", "127.0.0.1:3000"], "--api-url: '127.0.0.1:3000'"),
    (["connect", "chat:1.0.0", "--api-url", "ftp://host"], "--api-url: 'ftp://host'"),
    (["connect", "chat:1.0.0", "--username", "Bad Name!"], "--username: 'Bad Name!'"),
    (["connect", "chat:1.0.0", "--host-address", "localhost"], "'localhost' is not an IP"),
    (["connect", "chat:1.0.0", "--ice-servers", "nope"], "--ice-servers: 'nope' is not one of"),
    (["connect", "chat:1.0.0", "--batching", "maybe"], "--batching: invalid choice: 'maybe'"),
    (["connect", "chat:1.0.0", "--show-sender", "x"], "--show-sender: invalid choice: 'x'"),
    (["connect", "chat:1.0.0", "--bogus"], "unrecognized arguments: --bogus"),
    (["connect"], "the following arguments are required: FQN"),
    (["publish", "chat"], "argument SERVICE: 'chat'"),
    (["publish", "chat:1.0.0@bob"], "'chat:1.0.0@bob' names a user"),
    (["publish", "chat:1.0.0@"], "'chat:1.0.0@': the username after '@' is empty"),
    (["publish", "chat:1.0.0", "--max-offers", "0"], "--max-offers: '0' is not a whole number"),
    (["publish", "chat:1.0.0", "--max-offers", "101"], "--max-offers: '101'"),
    (["publish", "chat:1.0.0", "--max-offers", "two"], "--max-offers: 'two'"),
    (["demo", "--timeout", "0"], "--timeout: '0' is not a positive number of seconds"),
    (["demo", "--timeout", "-1"], "--timeout: '-1'"),
    (["keygen"], "the following arguments are required: FILE"),
    (["keygen", "k.json", "--username", "X"], "--username: 'X'"),
    (["whoami", "k.json", "--api-url", "http://"], "--api-url: 'http://'"),
    (["nosuch"], "invalid choice: 'nosuch'"),
    ([], "the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_VALUES)
def test_a_bad_value_is_one_line_and_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(args)
    assert raised.value.code == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    [line] = stderr_lines(err)
    command = f"rondevu {args[0]}" if args and args[0] != "nosuch" else "rondevu"
    assert line.startswith(f"{command}: "), line
    assert expected in line
    assert line.endswith(f"(see '{command} --help')")


@pytest.mark.parametrize(
    "args",
    [
        ["connect", "chat:1.0.0@", *URL],
        ["connect", "chat:1.0.0", "--connect-timeout", "-5", *URL],
        ["publish", "chat:1.0.0", "--max-offers", "x", *URL],
    ],
)
def test_the_real_command_prints_only_that_line(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert len(stderr_lines(result.stderr)) == 1, result.stderr
    assert no_traceback(result.stderr)


ICE_FILES = [
    ('[{"urls": "turn:turn.example:3478"}]', "a TURN server needs a username and a credential"),
    ('[{"urls": "http://x"}]', "unsupported ICE server URL scheme"),
    ('{"iceServers": 5}', "expected a list of ICE servers, or an object with iceServers"),
    ('{"iceServers": [], "iceTransportPolicy": "relay"}', "relay transport policy needs"),
    ('{"iceServers": [], "iceTransportPolicy": "tcp"}', "must be 'all' or 'relay'"),
    ('{"servers": []}', "unknown keys servers"),
    ("[{", "not valid JSON"),
]


@pytest.mark.parametrize(("content", "expected"), ICE_FILES)
def test_a_bad_ice_server_file_is_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "ice.json"
    path.write_text(content)
    result = run_cli("connect", "chat:1.0.0@alice", *URL, "--ice-servers", str(path))
    assert result.returncode == EXIT_USAGE
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"rondevu connect: argument --ice-servers: '{path}': "), line
    assert expected in line


def test_a_missing_ice_server_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "turn.json"
    with pytest.raises(argparse.ArgumentTypeError, match="No such file or directory"):
        ice_servers(str(path))


def test_an_ice_server_file_is_what_a_turn_service_hands_out(tmp_path: Path) -> None:
    turn = {"urls": ["turn:turn.example:3478"], "username": "1767225600:alice", "credential": "c"}
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"urls": "stun:turn.example:3478"}, turn]))
    configured = tmp_path / "config.json"
    configured.write_text(json.dumps({"iceServers": [turn], "iceTransportPolicy": "relay"}))
    plain = ice_servers(str(listed))
    assert isinstance(plain, IceConfiguration)
    assert plain.servers == (
        IceServer(urls=("stun:turn.example:3478",)),
        IceServer(urls=("turn:turn.example:3478",), username="1767225600:alice", credential="c"),
    )
    assert plain.transport_policy is IceTransportPolicy.ALL
    relayed = ice_servers(str(configured))
    assert relayed.transport_policy is IceTransportPolicy.RELAY
    assert ice_servers("none") == []
    assert ice_servers("google-stun") == "google-stun"


def test_a_broken_key_file_is_one_line(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"publicKey": "AAAA"}')
    result = run_cli("publish", "chat:1.0.0", *URL, "--key-file", str(key))
    assert result.returncode == EXIT_USAGE
    assert stderr_lines(result.stderr) == [f"rondevu publish: key file {key}: no privateKey"]


def test_help_documents_the_server_url_default_and_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("publish", "connect", "whoami"):
        with pytest.raises(SystemExit) as raised:
            main([command, "--help"])
        assert raised.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "$RONDEVU_API_URL" in text, command
        assert DEFAULT_API_URL in text, command


def test_help_lists_every_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^\s+{command.name}\s+\S", text, re.MULTILINE), command.name
    assert "130 interrupted (Ctrl-C)" in " ".join(text.split())


def test_the_full_parser_defines_every_command() -> None:
    parser = build_parser()
    for command in COMMANDS:
        sub = parser.commands[command.name]
        # A real definition has its own options, not only -h.
        assert len(sub._actions) > 1, command.name


# -- the value checks, as rules ------------------------------------------------------------


def test_the_server_url_comes_from_the_flag_then_the_environment_then_the_default() -> None:
    env = {"RONDEVU_API_URL": "https://signal.example:8443/base"}
    assert resolve_api_url("http://flag:1", env) == "http://flag:1"
    assert resolve_api_url(None, env) == "https://signal.example:8443/base"
    assert resolve_api_url(None, {}) == DEFAULT_API_URL == "http://127.0.0.1:3000"
    assert resolve_api_url(None, {"RONDEVU_API_URL": ""}) == DEFAULT_API_URL
    with pytest.raises(CliError, match=r"^RONDEVU_API_URL: 'http://x:70000' has an invalid port"):
        resolve_api_url(None, {"RONDEVU_API_URL": "http://x:70000"})


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_seconds_accepts_exactly_the_positive_finite_numbers(value: float) -> None:
    if math.isfinite(value) and value > 0:
        assert seconds(repr(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(repr(value)))):
            seconds(repr(value))


@given(st.integers(-1000, 1000), st.integers(0, 50), st.integers(0, 50))
def test_count_accepts_exactly_its_range(value: int, low: int, span: int) -> None:
    check = count(low, low + span)
    if low <= value <= low + span:
        assert check(str(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{value}' is not a whole number"):
            check(str(value))


@given(
    st.sampled_from(["http", "https"]),
    st.sampled_from(["127.0.0.1", "localhost", "signal.example.org", "[::1]"]),
    st.integers(1, 65535) | st.none(),
    st.sampled_from(["", "/", "/rondevu"]),
)
def test_api_url_accepts_http_base_urls(
    scheme: str, host: str, port: int | None, path: str
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"
    assert api_url(url) == url


@given(st.text(max_size=40))
def test_api_url_refusals_name_the_value(text: str) -> None:
    if text.startswith(("http://", "https://")):
        return  # may be valid; the rule for those is the test above
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        api_url(text)
    assert str(raised.value).startswith(repr(text))


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("choice", "tty", "marked"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("always", False, True),
        ("always", True, True),
        ("never", True, False),
        ("never", False, False),
    ],
)
def test_received_lines_are_marked_on_a_terminal_unless_told(
    choice: str, tty: bool, marked: bool
) -> None:
    assert show_sender(choice, _Stream(tty)) is marked


# -- how a run ends: one line for every failure -------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (CliError("no connection", 1), 1, "rondevu connect: no connection"),
        (
            BaseExceptionGroup("tasks", [ExceptionGroup("inner", [CliError("deep", 2)])]),
            2,
            "rondevu connect: deep",
        ),
        (ExceptionGroup("tasks", [ValidationError("bad name")]), 1, "rondevu connect: bad name"),
        (BaseExceptionGroup("tasks", [KeyboardInterrupt()]), 130, "rondevu connect: interrupted"),
        (
            ExceptionGroup("tasks", [TimeoutError()]),
            1,
            "rondevu connect: internal error: TimeoutError:  (set RONDEVU_DEBUG=1 for the "
            "traceback)",
        ),
    ],
)
def test_every_ending_is_one_line(
    error: BaseException,
    code: int,
    line: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RONDEVU_DEBUG", raising=False)
    assert _report("rondevu connect", error) == code
    assert capsys.readouterr().err == line + "\n"


def test_the_debug_variable_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RONDEVU_DEBUG", "1")
    with pytest.raises(ExceptionGroup):
        _report("rondevu connect", ExceptionGroup("tasks", [RuntimeError("bug")]))
