"""Service FQNs and versions (docs/protocol.md §6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rondevu_core.errors import ValidationError
from rondevu_core.rules.fqn import (
    ServiceFqn,
    connect_target,
    discovery_mode,
    is_version_compatible,
    parse_service_fqn,
    parse_version,
    validate_service_fqn,
)

services = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?\Z")
versions = st.from_regex(r"\A[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}(-[a-z0-9.-]{1,8})?\Z")
usernames = st.from_regex(r"\A[a-z0-9][a-z0-9.-]{1,12}[a-z0-9]\Z")
fqns = st.builds(ServiceFqn, service=services, version=versions, username=st.none() | usernames)

ERR_FORMAT = "Service FQN must be in format: service:version[@username]"
ERR_CHARS = "Service name must be lowercase alphanumeric with optional dots/dashes"
ERR_VERSION = "Version must be semantic versioning (e.g., 1.0.0, 2.1.3-beta)"


@given(fqns)
def test_format_then_parse_round_trips(fqn: ServiceFqn) -> None:
    assert validate_service_fqn(str(fqn)) == fqn
    assert parse_service_fqn(str(fqn)) == fqn


@given(fqns, usernames)
def test_with_username_keeps_service_and_version(fqn: ServiceFqn, user: str) -> None:
    owned = fqn.with_username(user)
    assert (owned.service, owned.version, owned.username) == (fqn.service, fqn.version, user)
    assert str(owned) == f"{fqn.base}@{user}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chat:1.0.0@alice", ServiceFqn(service="chat", version="1.0.0", username="alice")),
        ("chat:1.0.0", ServiceFqn(service="chat", version="1.0.0")),
        ("chat:1.0.0@", ServiceFqn(service="chat", version="1.0.0")),  # quirk: empty user
        ("a@b:1.0.0@c", ServiceFqn(service="a@b", version="1.0.0", username="c")),  # last @
        ("chat:1:2@x", ServiceFqn(service="chat", version="1:2", username="x")),  # first :
        ("@chat:1.0.0", ServiceFqn(service="@chat", version="1.0.0")),  # '@' at 0: no user
    ],
)
def test_parse_follows_the_server(text: str, expected: ServiceFqn) -> None:
    assert parse_service_fqn(text) == expected


@pytest.mark.parametrize("text", ["chat", ":1.0.0", "chat:", "chat:@alice", "", "@"])
def test_unparseable_shapes(text: str) -> None:
    assert parse_service_fqn(text) is None
    with pytest.raises(ValidationError) as raised:
        validate_service_fqn(text)
    assert str(raised.value) == ERR_FORMAT


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "Service FQN must be a string"),
        (["chat:1.0.0"], "Service FQN must be a string"),
        ("Chat:1.0.0", ERR_CHARS),
        ("chat-:1.0.0", ERR_CHARS),
        ("a@b:1.0.0@c", ERR_CHARS),
        ("x" * 129 + ":1.0.0", "Service name must be 1-128 characters"),
        ("chat:1.0", ERR_VERSION),
        ("chat:v1.0.0", ERR_VERSION),
        ("chat:1.0.0-Beta", ERR_VERSION),
        ("chat:1.0.0\n", ERR_VERSION),
        ("chat:1.0.0@Al", "Username must be at least 3 characters"),
        (
            "chat:1.0.0@Alice",
            "Username must be lowercase alphanumeric with optional dashes, "
            "and start/end with alphanumeric",
        ),
    ],
)
def test_validation_errors_are_exact(value: object, error: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_service_fqn(value)
    assert str(raised.value) == error


def test_service_name_of_128_characters_is_accepted() -> None:
    assert validate_service_fqn("x" * 128 + ":1.0.0").service == "x" * 128


@given(pre=st.from_regex(r"\A[a-z0-9.-]{1,300}\Z"))
def test_versions_longer_than_128_characters_are_refused(pre: str) -> None:
    """Ours, not the original's: a version is stored and indexed (PostgreSQL cannot
    index a few KB), so its length is bounded like the service name's."""
    version = f"1.0.0-{pre}"
    if len(version) <= 128:
        assert validate_service_fqn(f"chat:{version}@alice").version == version
    else:
        with pytest.raises(ValidationError, match=r"^Version must be 1-128 characters$"):
            validate_service_fqn(f"chat:{version}@alice")


@given(st.text(max_size=60))
def test_validation_never_raises_anything_else(text: str) -> None:
    try:
        fqn = validate_service_fqn(text)
    except ValidationError:
        return
    assert str(fqn) in (text, text.removesuffix("@"))


@given(versions)
def test_version_round_trips(text: str) -> None:
    assert str(parse_version(text)) == text


@given(versions)
def test_a_version_is_compatible_with_itself(text: str) -> None:
    assert is_version_compatible(text, text)


@pytest.mark.parametrize(
    ("requested", "available", "compatible"),
    [
        ("1.0.0", "1.2.3", True),
        ("1.2.3", "1.2.0", False),
        ("1.0.0", "2.0.0", False),
        ("0.1.0", "0.2.0", False),
        ("0.1.0", "0.1.5", True),
        ("1.0.0-beta", "1.0.0", False),
        ("1.0.0-beta", "1.0.0-beta", True),
        ("1.0.0", "1.0.0-beta", True),
        ("01.0.0", "1.0.0", True),
    ],
)
def test_documented_semver_rule(requested: str, available: str, compatible: bool) -> None:
    assert is_version_compatible(requested, available) is compatible


def test_huge_version_numbers_do_not_break_comparison() -> None:
    big = "9" * 5000
    assert is_version_compatible(f"{big}.0.0", f"{big}.1.0")
    assert not is_version_compatible(f"{big}.0.0", f"{big}8.0.0")


# -- the client's choice of target and lookup mode (§7.3) ---------------------------------


@given(fqns)
def test_discovery_mode_is_direct_exactly_when_a_user_is_named(fqn: ServiceFqn) -> None:
    assert discovery_mode(str(fqn)) == ("random" if fqn.username is None else "direct")


@given(fqns)
def test_connect_target_forms_agree(fqn: ServiceFqn) -> None:
    by_fqn = connect_target(str(fqn), None, None)
    by_parts = connect_target(None, fqn.base, fqn.username)
    assert by_fqn == by_parts == fqn


@pytest.mark.parametrize(
    ("service_fqn", "service", "username", "error"),
    [
        ("  ", None, None, "serviceFqn cannot be empty"),
        (None, None, None, "Either serviceFqn or service must be provided"),
        (None, "", None, "service cannot be empty"),
        (None, "chat:1.0.0", " ", "username cannot be empty"),
        (None, "chat", "alice", ERR_FORMAT),
        ("Chat:1.0.0", None, None, ERR_CHARS),
    ],
)
def test_connect_target_errors(
    service_fqn: str | None, service: str | None, username: str | None, error: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        connect_target(service_fqn, service, username)
    assert str(raised.value) == error
