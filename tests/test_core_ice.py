"""ICE server presets and configurations (rondevu_core.rules.ice, B17)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rondevu_core.rules.ice import (
    DEFAULT_ICE_CONFIGURATION,
    ICE_PRESETS,
    NO_ICE_SERVERS,
    IceConfiguration,
    IceServer,
    IceTransportPolicy,
    ice_configuration,
    parse_ice_server,
)


def test_presets_are_the_four_of_the_original() -> None:
    assert set(ICE_PRESETS) == {"ipv4-turn", "hostname-turns", "google-stun", "relay-only"}


def test_ipv4_turn_preset_exact() -> None:
    stun, turn = ICE_PRESETS["ipv4-turn"].servers
    assert stun == IceServer(urls=("stun:57.129.61.67:3478",))
    assert turn.urls == (
        "turn:57.129.61.67:3478?transport=tcp",
        "turn:57.129.61.67:3478?transport=udp",
    )
    assert (turn.username, turn.credential) == ("webrtcuser", "supersecretpassword")


def test_hostname_turns_and_google_presets_exact() -> None:
    stun, turn = ICE_PRESETS["hostname-turns"].servers
    assert stun.urls == ("stun:turn.share.fish:3478",)
    assert turn.urls[0] == "turns:turn.share.fish:5349?transport=tcp"
    assert len(turn.urls) == 4
    assert [s.urls for s in ICE_PRESETS["google-stun"].servers] == [
        ("stun:stun.l.google.com:19302",),
        ("stun:stun1.l.google.com:19302",),
    ]


def test_relay_only_sets_the_policy_on_the_configuration() -> None:
    # B17: the original put iceTransportPolicy inside the TURN entry, where it is ignored.
    relay = ICE_PRESETS["relay-only"]
    assert relay.transport_policy is IceTransportPolicy.RELAY
    assert relay.servers == ICE_PRESETS["ipv4-turn"].servers
    assert all(
        p.transport_policy is IceTransportPolicy.ALL
        for name, p in ICE_PRESETS.items()
        if name != "relay-only"
    )


def test_default_is_one_google_stun() -> None:
    assert ice_configuration() is DEFAULT_ICE_CONFIGURATION
    assert [s.urls for s in DEFAULT_ICE_CONFIGURATION.servers] == [
        ("stun:stun.l.google.com:19302",)
    ]


def test_empty_list_means_no_servers() -> None:
    assert ice_configuration([]) == NO_ICE_SERVERS
    assert NO_ICE_SERVERS.servers == ()


def test_custom_servers_from_mappings() -> None:
    config = ice_configuration(
        [
            {"urls": "stun:127.0.0.1:3478"},
            {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"},
        ],
        transport_policy=IceTransportPolicy.RELAY,
    )
    assert config.transport_policy is IceTransportPolicy.RELAY
    assert config.servers[1] == IceServer(
        urls=("turn:127.0.0.1:3478",), username="u", credential="p"
    )


def test_policy_override_of_a_preset() -> None:
    config = ice_configuration("relay-only", transport_policy=IceTransportPolicy.ALL)
    assert config.transport_policy is IceTransportPolicy.ALL
    assert ice_configuration("ipv4-turn") is ICE_PRESETS["ipv4-turn"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"urls": "turn:x", "iceTransportPolicy": "relay"}, "belongs to the ICE configuration"),
        ({"urls": "stun:x", "foo": 1}, "unknown ICE server keys: foo"),
        ({"urls": 5}, "string or a list of strings"),
        ({"urls": []}, "at least one URL"),
        ({"urls": "http://x"}, "unsupported ICE server URL scheme"),
        ({"urls": "turn:x"}, "needs a username and a credential"),
        ({"urls": "turn:x", "username": "u", "credential": 1}, "credential must be a string"),
        ({"urls": "turn:x", "username": 1, "credential": "p"}, "username must be a string"),
        ({"urls": "stun:x", "credentialType": "oauth"}, "'password'"),
    ],
)
def test_malformed_server_entries(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ice_server(entry)


def test_unknown_preset_and_relay_without_turn() -> None:
    with pytest.raises(ValueError, match="known presets: google-stun"):
        ice_configuration("nope")
    with pytest.raises(ValueError, match="needs at least one TURN server"):
        ice_configuration("google-stun", transport_policy=IceTransportPolicy.RELAY)


urls = st.sampled_from(["stun:", "stuns:", "turn:", "turns:"]).flatmap(
    lambda scheme: st.from_regex(r"\A[a-z0-9.]{1,12}(:[0-9]{1,5})?\Z").map(scheme.__add__)
)


@settings(max_examples=50)
@given(st.lists(urls, min_size=1, max_size=4), st.text(max_size=8), st.text(max_size=8))
def test_parse_server_round_trips(url_list: list[str], user: str, password: str) -> None:
    server = parse_ice_server({"urls": url_list, "username": user, "credential": password})
    assert server.urls == tuple(url_list)
    assert server.is_turn == any(u.startswith("turn") for u in url_list)
    assert IceConfiguration(servers=(server,)).servers == (server,)
