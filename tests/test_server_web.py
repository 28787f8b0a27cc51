"""Our two HTTP additions for browsers, over a real HTTP server and real storage:
``GET /state`` (the live overview) and the browser client's static files under ``/web/``.

The overview must show what changes (a service appears, an offer is answered, a service
goes) and never anything secret: each test checks the body against the SDPs, keys and
full offer ids it put on the server.  The static files must be exactly the package's
files, with their types, and nothing else reachable by any spelling of a path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rondevu_server.asgi import STATE_MAX_LIMIT, STATE_MAX_OFFSET, STATE_REFRESH_MS, StateView
from rondevu_server.static import WebFiles
from tests import cli_testing
from tests.cli_testing import Processes, start_serve
from tests.rondevu_server_testing import BACKENDS, Peer, RunningServer, running_server, sdp


@pytest.fixture(params=BACKENDS)
def srv(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with running_server(request.param) as server:
        yield server


def state(srv: RunningServer, query: str = "") -> dict[str, Any]:
    srv.clock.advance(STATE_REFRESH_MS)  # past the shared reading of the last request
    reply = srv.http.get(f"/state{query}")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    return body


def test_the_overview_follows_services_and_answers_and_hides_secrets(srv: RunningServer) -> None:
    assert state(srv)["services"] == []
    alice, bob = Peer("a"), Peer("b")
    offers = [sdp() for _ in range(3)]
    fqn = f"chat:1.0.0@{alice.username}"
    published = srv.ok(
        alice, "publishService", {"serviceFqn": fqn, "offers": [{"sdp": s} for s in offers]}
    )
    first = published["offers"][0]["offerId"]
    view = state(srv)
    assert view["totals"] == {"services": 1, "offers": 3}
    assert view["handshakes"] == []
    [service] = view["services"]
    assert service["serviceFqn"] == fqn
    assert service["username"] == alice.username
    assert (service["availableOffers"], service["answeredOffers"]) == (3, 0)

    answer = sdp()
    srv.ok(bob, "answerOffer", {"serviceFqn": fqn, "offerId": first, "sdp": answer})
    srv.ok(bob, "addIceCandidates", {"offerId": first, "candidates": [{"candidate": "c-secret"}]})
    view = state(srv)
    [service] = view["services"]
    assert (service["availableOffers"], service["answeredOffers"]) == (2, 1)
    [handshake] = view["handshakes"]
    assert handshake["offerRef"] == first[:12]
    assert (handshake["offerer"], handshake["answerer"]) == (alice.username, bob.username)
    assert handshake["serviceFqn"] == fqn
    text = json.dumps(view)
    for secret in [
        *offers,
        answer,
        "c-secret",
        first,
        alice.keypair.public_key,
        bob.keypair.public_key,
    ]:
        assert secret not in text

    srv.ok(alice, "deleteService", {"serviceFqn": fqn})
    view = state(srv)
    assert (view["services"], view["handshakes"]) == ([], [])


def test_the_overview_is_bounded_and_paged(srv: RunningServer) -> None:
    owners = [Peer("p") for _ in range(5)]
    for owner in owners:
        srv.publish(owner, "many")
    page = state(srv, "?limit=2")
    assert page["limit"] == 2
    assert len(page["services"]) == 2
    newest = [s["username"] for s in page["services"]]
    later = state(srv, "?limit=2&offset=2")
    assert [s["username"] for s in later["services"]] != newest
    assert state(srv, "?limit=100000")["limit"] == STATE_MAX_LIMIT
    assert state(srv, "?limit=-4&offset=abc")["limit"] == 1
    assert state(srv, "?offset=99999999999999999999")["services"] == []


def test_a_reading_is_shared_for_a_moment() -> None:
    with running_server("sqlite") as srv:
        alice = Peer("a")
        before = srv.http.get("/state").json()
        srv.publish(alice, "soon")
        assert srv.http.get("/state").json() == before  # same reading, same clock
        srv.clock.advance(STATE_REFRESH_MS)
        assert len(srv.http.get("/state").json()["services"]) == 1


def test_query_strings_are_clamped_never_refused() -> None:
    assert StateView.page(b"") == (50, 0)
    assert StateView.page(b"limit=7&offset=3") == (7, 3)
    assert StateView.page(b"limit=0") == (1, 0)
    assert StateView.page(b"limit=%ff&offset=-1") == (50, 0)
    assert StateView.page(b"a=1&" * 500) == (50, 0)  # past the field limit: defaults


@given(st.binary(max_size=600))
def test_any_query_gives_a_page_within_bounds(query: bytes) -> None:
    limit, offset = StateView.page(query)
    assert 1 <= limit <= STATE_MAX_LIMIT
    assert 0 <= offset <= STATE_MAX_OFFSET


processes = cli_testing.processes


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--no-public-state", "--no-web-client"), {}),
        ((), {"RONDEVU_PUBLIC_STATE": "0", "RONDEVU_WEB_CLIENT": "off"}),
    ],
)
def test_rondevu_serve_switches_both_off(
    processes: Processes, args: tuple[str, ...], env: dict[str, str]
) -> None:
    url, _ = start_serve(processes, *args, env=cli_testing.cli_env(env))
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/state").status_code == 404
        assert http.get("/web/").status_code == 404
        assert "state" not in http.get("/").json().get("extensions", {})
    on, _ = start_serve(processes)
    with httpx.Client(base_url=on, timeout=10) as http:
        assert http.get("/state").status_code == 200
        assert http.get("/web/").status_code == 200


def test_switched_off_neither_route_exists() -> None:
    with running_server("sqlite", public_state=False, web_client=False) as srv:
        for path in ("/state", "/web/", "/web/app.js", "/web"):
            reply = srv.http.get(path)
            assert reply.status_code == 404, path
            assert reply.json() == {"error": "Not found. Use POST /rpc for all API calls."}
        assert "state" not in srv.http.get("/").json()["extensions"]


# -- /web/ ----------------------------------------------------------------------------


def package_files() -> dict[str, bytes]:
    folder = resources.files("rondevu_server") / "web"
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}


@pytest.fixture(scope="module")
def web() -> Iterator[RunningServer]:
    with running_server("sqlite") as server:
        yield server


TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}


def test_every_file_of_the_client_is_served_as_it_is(web: RunningServer) -> None:
    files = package_files()
    assert {"index.html", "app.js", "rondevu.js", "wire.js"} <= set(files)
    for name, body in files.items():
        reply = web.http.get(f"/web/{name}")
        assert reply.status_code == 200, name
        assert reply.content == body
        assert reply.headers["content-type"] == TYPES[name.rsplit(".", 1)[1]]
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in reply.headers["content-security-policy"]
    assert web.http.get("/web/").content == files["index.html"]
    assert sorted(WebFiles.load().paths()) == sorted(["/web/", *(f"/web/{n}" for n in files)])


def test_a_current_copy_is_not_sent_again(web: RunningServer) -> None:
    first = web.http.get("/web/rondevu.js")
    again = web.http.get("/web/rondevu.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    other = web.http.get("/web/rondevu.js", headers={"if-none-match": '"stale"'})
    assert other.status_code == 200
    head = web.http.head("/web/app.js")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(package_files()["app.js"]))
    assert head.content == b""


def test_web_without_its_slash_is_redirected(web: RunningServer) -> None:
    reply = web.http.get("/web", follow_redirects=False)
    assert reply.status_code == 308
    assert reply.headers["location"] == "/web/"


@pytest.mark.parametrize(
    "path",
    [
        "/web/../asgi.py",
        "/web/%2e%2e/asgi.py",
        "/web/..%2fasgi.py",
        "/web/static.py",
        "/web/web/index.html",
        "/web//index.html",
        "/web/index.html/",
        "/web/INDEX.HTML",
        "/web/.hidden",
        "/web/__init__.py",
        "/webapp.js",
        "/web/index.html%00.js",
    ],
)
def test_nothing_else_is_reachable(web: RunningServer, path: str) -> None:
    reply = web.http.get(path, headers={"origin": "http://page.example"})
    assert reply.status_code == 404
    assert reply.json() == {"error": "Not found. Use POST /rpc for all API calls."}
    assert reply.headers["access-control-allow-origin"] == "http://page.example"  # as any 404
