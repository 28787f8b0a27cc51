"""The client's signaling layer (transports, RpcClient, RondevuAPI) against our real server.

Every test that takes ``env`` runs twice, unchanged: once over HTTP to a real uvicorn
server on 127.0.0.1 (in its own thread, so the test's event loop holds only client
tasks), once in-process through `InProcessTransport` to a `RondevuServer` on the test's
loop.  Batching is observed with `Recording`, a wrapper that counts the bodies a real
transport sends; nothing stands in for the server except in the fault tests, where a
`FaultyServer` (a real server with one injected fault per marked call) produces the
replies an honest server never sends.  Synchronisation is by events, never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import uvicorn

from rondevu import (
    ClientClosedError,
    HttpTransport,
    InProcessTransport,
    RondevuAPI,
    RpcError,
    SignalingTransport,
    TransportError,
    UsageError,
)
from rondevu.transport import ERR_NOT_JSON, decode_reply, encode_body
from rondevu_core.batcher import BatcherOptions
from rondevu_core.rules.signing import KeyPair
from rondevu_schemas import ServiceEntry, ServicePage
from rondevu_server.asgi import RondevuApp
from rondevu_server.config import ServerConfig
from rondevu_server.server import RondevuServer, open_storage
from tests.rondevu_server_testing import FakeClock, RunningServer, running_server, sdp, unique

TIMEOUT = 10.0
KINDS = ["http", "inprocess"]


class Recording:
    """Wraps a real transport and keeps every body it sends (and whether it closed)."""

    def __init__(self, inner: SignalingTransport) -> None:
        self.inner = inner
        self.bodies: list[Any] = []
        self.closed = False

    async def send(self, body: Any) -> Any:
        self.bodies.append(body)
        return await self.inner.send(body)

    async def aclose(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True
        await self.inner.aclose()

    @property
    def shapes(self) -> list[int | str]:
        """Per body: the number of calls of an array, or "object"."""
        return [len(b) if isinstance(b, list) else "object" for b in self.bodies]


class Gate(Recording):
    """A recording transport that holds every body until ``release`` (to keep calls in
    flight); ``entered`` is set when the first body arrives."""

    def __init__(self, inner: SignalingTransport) -> None:
        super().__init__(inner)
        self.entered = anyio.Event()
        self.released = anyio.Event()

    async def send(self, body: Any) -> Any:
        self.bodies.append(body)
        self.entered.set()
        await self.released.wait()
        return await self.inner.send(body)


@dataclass
class Env:
    """One way of reaching a real server, and the server's clock."""

    kind: str
    clock: FakeClock
    make_transport: Callable[[], SignalingTransport]
    opened: list[Recording] = field(default_factory=list)

    def api(
        self,
        *,
        batching: bool | BatcherOptions = True,
        wrap: Callable[[SignalingTransport], Recording] = Recording,
        username: str | None = None,
    ) -> tuple[RondevuAPI, Recording]:
        """A fresh identity's API over a recorded transport, signing on the server clock."""
        transport = wrap(self.make_transport())
        api = RondevuAPI(
            transport,
            username=username or unique("u"),
            batching=batching,
            wall_clock=self.clock,
        )
        return api, transport


@pytest.fixture(scope="module")
def http_server() -> Iterator[RunningServer]:
    with running_server("sqlite") as running:
        yield running


@pytest.fixture(params=KINDS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    if request.param == "http":
        srv: RunningServer = request.getfixturevalue("http_server")
        yield Env("http", srv.clock, lambda: HttpTransport(srv.url))
        return
    clock = FakeClock()
    server = await RondevuServer.open(ServerConfig(db=":memory:"), clock=clock)
    try:
        yield Env("inprocess", clock, lambda: InProcessTransport(server))
    finally:
        await server.aclose()


def candidate(n: int) -> dict[str, Any]:
    return {
        "candidate": f"candidate:{n} 1 udp 2122260223 127.0.0.1 {6000 + n} typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


# -- every RPC, batching on and off --------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
async def test_every_rpc_through_the_api(env: Env, batching: bool) -> None:
    alice_api, alice_wire = env.api(batching=batching)
    bob_api, bob_wire = env.api(batching=batching)
    service = unique("svc")
    fqn = f"{service}:1.0.0@{alice_api.username}"
    offer_sdps = [sdp(), sdp()]
    with anyio.fail_after(TIMEOUT):
        async with alice_api as alice, bob_api as bob:
            free = await alice.get_user(alice.username)
            assert free.available is True
            assert free.username == alice.username

            published = await alice.publish_service(fqn, offer_sdps, ttl=300_000)
            assert published.service_fqn == fqn
            assert published.username == alice.username
            assert [o.sdp for o in published.offers] == offer_sdps
            first, second = (o.offer_id for o in published.offers)

            claimed = await bob.get_user(alice.username)
            assert claimed.available is False
            assert claimed.public_key == alice.keypair.public_key

            direct = await bob.get_service(fqn)
            assert isinstance(direct, ServiceEntry)
            assert (direct.offer_id, direct.sdp) == (first, offer_sdps[0])
            page = await bob.get_service(f"{service}:1.0.0", limit=5, offset=0)
            assert isinstance(page, ServicePage)
            assert [s.offer_id for s in page.services] == [first]
            assert page.count == 1
            random = await bob.get_service(f"{service}:1.0.0")
            assert isinstance(random, ServiceEntry)
            assert random.service_fqn == fqn

            assert await alice.get_offer_answer(fqn, first) is None  # "not yet answered"
            await bob.answer_offer(fqn, first, "v=0\r\nanswer\r\n")
            answer = await alice.get_offer_answer(fqn, first)
            assert answer is not None
            assert (answer.sdp, answer.answerer_id) == ("v=0\r\nanswer\r\n", bob.username)

            assert await bob.add_ice_candidates(fqn, first, [candidate(1), candidate(2)]) == 2
            polled = await alice.poll()
            assert [a.offer_id for a in polled.answers] == [first]
            rows = polled.ice_candidates[first]
            assert [r.candidate for r in rows] == [candidate(1), candidate(2)]
            assert {r.role for r in rows} == {"answerer"}
            later = await alice.poll(since=rows[-1].created_at)
            assert later.ice_candidates == {}
            assert later.answers == []

            assert await alice.add_ice_candidates(fqn, first, [candidate(3)]) == 1
            got = await bob.get_ice_candidates(fqn, first)
            assert [c.candidate for c in got.candidates] == [candidate(3)]
            assert got.offer_id == first
            newer = await bob.get_ice_candidates(fqn, first, since=got.candidates[-1].created_at)
            assert newer.candidates == []

            with pytest.raises(RpcError) as unowned:
                await bob.get_offer_answer(fqn, second)
            assert str(unowned.value) == "Not authorized to access this offer"

            await alice.delete_service(fqn)
            with pytest.raises(RpcError) as gone:
                await bob.get_service(fqn)
            assert gone.value.message == "Service not found"
            assert gone.value.method.value == "getService"

    for wire in (alice_wire, bob_wire):
        assert wire.closed
        # Sequential calls: one call per body; arrays when batching, objects when not.
        assert wire.shapes == (
            [1] * len(wire.bodies) if batching else ["object"] * len(wire.bodies)
        )
        assert wire.bodies
    # The wire format of §3/§4: signed with the injected wall clock, publicKey except getUser.
    first_call = alice_wire.bodies[0][0] if batching else alice_wire.bodies[0]
    assert first_call["method"] == "getUser"
    assert (
        first_call["message"]
        == f"getUser:{alice_api.username}:{alice_api.username}:{env.clock.now}"
    )
    assert "publicKey" not in first_call
    publish = alice_wire.bodies[1][0] if batching else alice_wire.bodies[1]
    assert publish["publicKey"] == alice_api.keypair.public_key
    assert list(publish) == ["method", "message", "signature", "publicKey", "params"]


# -- batching ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_calls_share_one_array_body(env: Env) -> None:
    options = BatcherOptions(max_batch_size=5, max_wait_ms=60_000)
    api, wire = env.api(batching=options)
    names = [unique("n") for _ in range(5)]
    results: dict[str, Any] = {}

    async def ask(name: str) -> None:
        results[name] = await api.get_user(name)

    with anyio.fail_after(TIMEOUT):
        async with api, anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(ask, name)
    # The fifth call filled the batch: one array of five, each caller got its own reply.
    assert wire.shapes == [5]
    assert [call["params"]["username"] for call in wire.bodies[0]] == names
    assert {name: r.username for name, r in results.items()} == {n: n for n in names}


@pytest.mark.anyio
async def test_default_batching_splits_at_ten_and_sends_the_rest_later(env: Env) -> None:
    api, wire = env.api()  # 0.18.9 defaults: 10 calls, 50 ms, 10 ms throttle
    assert (api.rpc.options.max_batch_size, api.rpc.options.max_wait_ms) == (10, 50)
    names = [unique("n") for _ in range(12)]
    results: dict[str, Any] = {}

    async def ask(name: str) -> None:
        results[name] = await api.get_user(name)

    with anyio.fail_after(TIMEOUT):
        async with api, anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(ask, name)
    # Ten at once (size), the two left over on their own deadline: none stranded (B10).
    assert wire.shapes == [10, 2]
    assert {name: r.username for name, r in results.items()} == {n: n for n in names}


@pytest.mark.anyio
async def test_one_failing_call_does_not_poison_its_batch(env: Env) -> None:
    api, wire = env.api(batching=BatcherOptions(max_batch_size=3, max_wait_ms=60_000))
    missing = f"{unique('nosvc')}:1.0.0@{unique('nobody')}"
    outcomes: dict[str, Any] = {}

    async def run(key: str, call: Callable[[], Any]) -> None:
        try:
            outcomes[key] = await call()
        except RpcError as error:
            outcomes[key] = error

    with anyio.fail_after(TIMEOUT):
        async with api, anyio.create_task_group() as tg:
            tg.start_soon(run, "before", lambda: api.get_user("before"))
            tg.start_soon(run, "failing", lambda: api.get_service(missing))
            tg.start_soon(run, "after", lambda: api.get_user("after"))
    assert wire.shapes == [3]
    assert outcomes["before"].username == "before"
    assert outcomes["after"].username == "after"
    assert isinstance(outcomes["failing"], RpcError)
    assert str(outcomes["failing"]) == "Service not found"


# -- shutdown ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
async def test_aclose_settles_every_pending_call_and_leaves_no_task(
    env: Env, batching: bool
) -> None:
    before = asyncio.all_tasks()
    options = BatcherOptions(max_batch_size=2, max_wait_ms=60_000, enabled=batching)
    api, gate = env.api(batching=options, wrap=Gate)
    assert isinstance(gate, Gate)
    errors: list[BaseException] = []

    async def ask(name: str) -> None:
        try:
            await api.get_user(name)
        except ClientClosedError as error:
            errors.append(error)

    with anyio.fail_after(TIMEOUT):
        async with api, anyio.create_task_group() as callers:
            for n in range(3):
                callers.start_soon(ask, f"user{n}")
            await gate.entered.wait()  # a body is held in flight by the gate
            await anyio.wait_all_tasks_blocked()
            if batching:
                assert (api.rpc.in_flight, api.rpc.queued) == (2, 1)  # one call waits 60 s
            else:
                assert (api.rpc.in_flight, api.rpc.queued) == (3, 0)
            await api.aclose()
            # Every caller is woken by aclose itself, before the block even ends.
            await anyio.wait_all_tasks_blocked()
            assert len(errors) == 3
        assert gate.closed
    assert all(str(e) == "Client closed before the call completed" for e in errors)
    with pytest.raises(ClientClosedError):
        await api.get_user("late")
    assert asyncio.all_tasks() == before


@pytest.mark.anyio
@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
async def test_client_whose_tasks_were_cancelled_fails_calls_at_once(
    env: Env, batching: bool
) -> None:
    """Regression: the scope that entered the client is cancelled while a connection
    still issues calls.  The waiting call and any later one fail with ClientClosedError
    instead of hanging or touching the dead task group ("This task group is not active")."""
    options = BatcherOptions(max_wait_ms=60_000, enabled=batching)
    api, gate = env.api(batching=options, wrap=Gate)
    errors: list[ClientClosedError] = []

    async def ask(name: str) -> None:
        try:
            await api.get_user(name)
        except ClientClosedError as error:
            errors.append(error)

    with anyio.CancelScope() as host:
        async with api:
            # Shielded: this block stands for work that outlives the host's cancellation.
            with anyio.CancelScope(shield=True), anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as callers:
                    callers.start_soon(ask, "waiting")
                    await anyio.wait_all_tasks_blocked()
                    assert api.rpc.queued + api.rpc.in_flight == 1
                    host.cancel()  # the client's own tasks end; aclose has not run
                assert [str(e) for e in errors] == ["Client closed before the call completed"]
                with pytest.raises(ClientClosedError):
                    await api.get_user("late")
                assert not api.rpc.closed  # aclose (from the block's exit) still runs
    assert gate.closed
    assert (api.rpc.queued, api.rpc.in_flight) == (0, 0)


@pytest.mark.anyio
async def test_a_cancelled_caller_does_not_disturb_the_others(env: Env) -> None:
    options = BatcherOptions(max_batch_size=2, max_wait_ms=60_000)
    api, wire = env.api(batching=options)
    with anyio.fail_after(TIMEOUT):
        async with api:
            async with anyio.create_task_group() as tg:
                tg.start_soon(api.get_user, "gone")
                await anyio.wait_all_tasks_blocked()  # "gone" is queued, its caller waits
                tg.cancel_scope.cancel()
            # "gone" was still queued: its caller's cancellation withdrew it.
            assert api.rpc.queued == 0
            kept: dict[str, str] = {}

            async def ask(name: str) -> None:
                kept[name] = (await api.get_user(name)).username

            async with anyio.create_task_group() as tg:  # two calls fill the batch of two
                tg.start_soon(ask, "kept1")
                tg.start_soon(ask, "kept2")
    assert kept == {"kept1": "kept1", "kept2": "kept2"}
    assert [sorted(c["params"]["username"] for c in body) for body in wire.bodies] == [
        ["kept1", "kept2"]
    ]


@pytest.mark.anyio
async def test_a_cancelled_caller_cannot_take_back_a_call_already_sent(env: Env) -> None:
    api, gate = env.api(batching=BatcherOptions(max_batch_size=1), wrap=Gate)
    assert isinstance(gate, Gate)
    with anyio.fail_after(TIMEOUT):
        async with api:
            async with anyio.create_task_group() as tg:
                tg.start_soon(api.get_user, "sent")
                await gate.entered.wait()  # the body is on its way
                tg.cancel_scope.cancel()
            assert api.rpc.in_flight == 1
            gate.released.set()
            kept = await api.get_user("kept")  # the sent call completed; nothing stuck
            assert api.rpc.in_flight == 0
    assert kept.username == "kept"
    assert [[c["params"]["username"] for c in body] for body in gate.bodies] == [
        ["sent"],
        ["kept"],
    ]


@pytest.mark.anyio
async def test_default_clocks_sign_with_the_system_time() -> None:
    server = await RondevuServer.open(ServerConfig(db=":memory:"))  # the system clock
    try:
        with anyio.fail_after(TIMEOUT):
            async with RondevuAPI(InProcessTransport(server)) as api:
                polled = await api.poll()  # authenticated: the timestamp was accepted
                assert polled.answers == []
    finally:
        await server.aclose()


@pytest.mark.anyio
async def test_calls_need_an_entered_client(env: Env) -> None:
    api, wire = env.api()
    with pytest.raises(UsageError):
        await api.get_user("x")
    await api.aclose()  # never entered: only closes the transport
    assert wire.closed
    assert wire.bodies == []


# -- transport failures --------------------------------------------------------------


class FaultyServer(RondevuServer):
    """Our real server, except for calls that look up a ``fault-*`` username:

    - ``fault-502``: the whole body gets HTTP 502;
    - ``fault-html``: the whole body gets 200 with a body that is not JSON;
    - ``fault-item``: that call's reply item is replaced by a malformed object;
    - ``fault-short``: the reply array loses its last item.
    """

    async def handle_rpc_body(
        self,
        body: bytes,
        client_key: str | None = None,
        *,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[int, bytes]:
        request = json.loads(body)
        calls = request if isinstance(request, list) else [request]
        names = [call.get("params", {}).get("username") for call in calls]
        if "fault-502" in names:
            return 502, b'{"error":"upstream down"}'
        if "fault-html" in names:
            return 200, b"<html>maintenance</html>"
        status, content = await super().handle_rpc_body(body, client_key, disconnected=disconnected)
        reply = json.loads(content)
        if "fault-item" in names:
            items = reply if isinstance(reply, list) else None
            if items is None:
                reply = {"ok": 1}
            else:
                items[names.index("fault-item")] = {"ok": 1}
        if "fault-short" in names and isinstance(reply, list):
            reply.pop()
        return status, encode_body(reply)


@asynccontextmanager
async def faulty_env(kind: str) -> AsyncIterator[Env]:
    """A `FaultyServer` reached in-process, or over HTTP from uvicorn on this loop."""
    clock = FakeClock()
    config = ServerConfig(db=":memory:")
    server = FaultyServer(config, await open_storage(config), clock=clock)
    try:
        if kind == "inprocess":
            yield Env(kind, clock, lambda: InProcessTransport(server))
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = RondevuApp(config, server=server, clock=clock)
        uv = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(uv.serve, [sock])
                try:
                    yield Env(kind, clock, lambda: HttpTransport(url))
                finally:
                    uv.should_exit = True
        finally:
            sock.close()
    finally:
        await server.aclose()


async def outcome_of(call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except (RpcError, TransportError) as error:
        return error


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_bad_replies_fail_exactly_the_calls_concerned_unbatched(kind: str) -> None:
    results: dict[str, Any] = {}

    async def ask(api: RondevuAPI, name: str) -> None:
        results[name] = await outcome_of(lambda: api.get_user(name))

    names = ["fault-502", "fault-html", "fault-item", "fine"]
    with anyio.fail_after(TIMEOUT):
        async with faulty_env(kind) as fenv:
            api, wire = fenv.api(batching=False)
            async with api, anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(ask, api, name)
    assert wire.shapes == ["object"] * 4
    assert isinstance(results["fault-502"], TransportError)
    assert str(results["fault-502"]) == "HTTP 502: Bad Gateway"
    assert isinstance(results["fault-html"], TransportError)
    assert str(results["fault-html"]) == ERR_NOT_JSON
    assert isinstance(results["fault-item"], TransportError)
    assert "malformed" in str(results["fault-item"])
    assert results["fine"].username == "fine"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_bad_replies_fail_exactly_the_calls_concerned_batched(kind: str) -> None:
    options = BatcherOptions(max_batch_size=2, max_wait_ms=60_000, throttle_interval_ms=0)
    results: dict[str, Any] = {}

    async def batch_of_two(api: RondevuAPI, first: str, second: str) -> None:
        async with anyio.create_task_group() as tg:
            for name in (first, second):
                tg.start_soon(ask, api, name)

    async def ask(api: RondevuAPI, name: str) -> None:
        results[name] = await outcome_of(lambda: api.get_user(name))

    with anyio.fail_after(TIMEOUT):
        async with faulty_env(kind) as fenv:
            api, wire = fenv.api(batching=options)
            async with api:
                # One body at a time, so each pair is exactly one array.
                await batch_of_two(api, "fault-502", "a-victim")
                await batch_of_two(api, "fault-item", "b-survivor")
                await batch_of_two(api, "fault-short", "c-victim")
                await batch_of_two(api, "d-fine", "e-fine")
    assert wire.shapes == [2, 2, 2, 2]
    # A whole-body failure fails the calls of that body, and only those.
    assert str(results["fault-502"]) == str(results["a-victim"]) == "HTTP 502: Bad Gateway"
    # A malformed item fails its own call only (B9 for malformed replies too).
    assert isinstance(results["fault-item"], TransportError)
    assert results["b-survivor"].username == "b-survivor"
    # A reply array of the wrong length cannot be matched by position: the body fails.
    assert isinstance(results["fault-short"], TransportError)
    assert isinstance(results["c-victim"], TransportError)
    assert "1 replies for a batch of 2" in str(results["c-victim"])
    assert results["d-fine"].username == "d-fine"
    assert results["e-fine"].username == "e-fine"


@pytest.mark.anyio
async def test_unreachable_server_is_a_transport_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more: connection refused
    clock = FakeClock()
    api = RondevuAPI(HttpTransport(f"http://127.0.0.1:{port}/"), wall_clock=clock, batching=False)
    with anyio.fail_after(TIMEOUT):
        async with api:
            with pytest.raises(TransportError) as failure:
                await api.poll()
    assert str(failure.value).startswith("Network error: ")


def test_decode_reply_rules() -> None:
    assert decode_reply(200, "OK", b'{"a":1}') == {"a": 1}
    assert decode_reply(204, "No Content", b"[]") == []
    with pytest.raises(TransportError, match=r"^HTTP 400: Bad Request$"):
        decode_reply(400, "Bad Request", b'{"error":"Empty request array"}')
    with pytest.raises(TransportError, match="not JSON"):
        decode_reply(200, "OK", b"\xff\xfe")
    with pytest.raises(TransportError, match="not JSON"):
        decode_reply(200, "OK", b"[" * 100_000)
    assert encode_body({"sdp": "é\r\n"}) == '{"sdp":"é\\r\\n"}'.encode()


def test_identity_defaults_to_a_fresh_anonymous_one() -> None:
    keypair = KeyPair.from_seed(bytes(range(1, 33)))
    api = RondevuAPI(InProcessTransport(_NoServer()), username="alice", keypair=keypair)
    assert api.username == "alice"
    assert api.keypair is keypair
    anon = RondevuAPI(InProcessTransport(_NoServer()))
    other = RondevuAPI(InProcessTransport(_NoServer()))
    assert anon.username.startswith("anon-")
    assert anon.username != other.username
    assert anon.keypair != other.keypair


@pytest.mark.anyio
async def test_debug_logs_never_carry_the_private_key(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    api, _ = env.api()
    with caplog.at_level(logging.DEBUG, logger="rondevu"), anyio.fail_after(TIMEOUT):
        async with api:
            await api.poll()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert {r.name for r in caplog.records} >= {"rondevu.rpc", "rondevu.transport"}
    assert api.keypair.private_key not in text


class _NoServer:
    async def handle_rpc_body(
        self, body: bytes, client_key: str | None = None
    ) -> tuple[int, bytes]:
        raise AssertionError("not called")
