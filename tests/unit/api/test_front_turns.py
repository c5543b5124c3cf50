"""Exec round trips in turns at the front (``corral.api.front_turns``): the queue itself,
then a real uvicorn server (the options ``corral serve`` uses, the process runtime) with
one exec at a time: a second exec waits before its body and credential are looked at
while the other routes answer, a waiter whose client leaves is forgotten, and a request
pipelined behind a waiting exec is answered after it, in order."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from corral.api.front import FrontProtocol
from corral.api.front_turns import FrontTurns, Other, Turn, Waiter, is_exec, turn_key
from corral.api.server import config
from corral.core import Core
from tests.support.app import KEY, make_app, make_settings, remove_sandboxes
from tests.support.conditions import eventually_async
from tests.support.server_thread import served
from tests.support.sockets import listening, port_of

# ---- the queue ---------------------------------------------------------------------------


def test_exec_requests_of_every_surface_are_told_from_the_rest() -> None:
    for url in (
        b"/api/sandboxes/sb-1/exec/run",
        b"/sandboxes/sb-1/exec/run?x=1",
        b"/api/sandboxes/sb-1/exec/run-async",
        b"/api/v1/sandboxes/sb-1/exec",
        b"/api/v1/storage/sandboxes/sb-1/compute/sessions/s-1/exec",
        b"/process.Process/Start",
    ):
        assert is_exec(b"POST", url), url
    for method, url in (
        (b"GET", b"/api/sandboxes/sb-1/exec/run"),
        (b"POST", b"/api/sandboxes/sb-1/exec"),  # an exec session: started, not waited for
        (b"POST", b"/api/sandboxes/sb-1/exec/run/more"),
        (b"POST", b"/api/sandboxes"),
        (b"GET", b"/healthz"),
        (b"POST", b"/process.Process/List"),
    ):
        assert not is_exec(method, url), (method, url)


def test_a_turn_is_keyed_by_the_credential_sent_else_the_client() -> None:
    assert turn_key([(b"host", b"x"), (b"x-api-key", b"k1")], ("10.0.0.1", 5)) == b"k1"
    assert turn_key([(b"authorization", b"Bearer t")], ("10.0.0.1", 5)) == b"Bearer t"
    assert turn_key([(b"host", b"x")], ("10.0.0.1", 5)) == b"10.0.0.1"


class Grants:
    """What ``granted`` callbacks got, in order, with an event per grant."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Turn]] = []
        self.changed = asyncio.Event()

    def to(self, name: str) -> object:
        def granted(turn: Turn) -> None:
            self.got.append((name, turn))
            self.changed.set()

        return granted

    async def next(self) -> tuple[str, Turn]:
        async with asyncio.timeout(5):
            while not self.got:
                self.changed.clear()
                await self.changed.wait()
        return self.got.pop(0)


def _ask(turns: FrontTurns, key: bytes, grants: Grants, name: str) -> Turn | Waiter | None:
    return turns.ask(key, grants.to(name), asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_beyond_the_bound_requests_wait_and_credentials_take_turns() -> None:
    turns, grants = FrontTurns(1, 16), Grants()
    first = _ask(turns, b"a", grants, "a0")
    assert isinstance(first, Turn) and turns.running == 1
    for name in ("a1", "a2"):
        assert isinstance(_ask(turns, b"a", grants, name), Waiter)
    assert isinstance(_ask(turns, b"b", grants, "b1"), Waiter)
    assert turns.waiting == 3
    first.release()
    first.release()  # once only
    order = []
    for _ in range(3):
        name, turn = await grants.next()
        order.append(name)
        turn.release()
    assert order == ["b1", "a1", "a2"]  # b had not been served; then a's in order
    assert (turns.running, turns.waiting) == (0, 0)


async def test_a_full_queue_lets_requests_on_and_no_bound_takes_no_turn() -> None:
    turns, grants = FrontTurns(1, 1), Grants()
    held = _ask(turns, b"a", grants, "a0")
    assert isinstance(_ask(turns, b"a", grants, "a1"), Waiter)
    assert _ask(turns, b"a", grants, "a2") is None  # the service's queue answers it
    assert isinstance(held, Turn)
    held.release()
    (_, turn) = await grants.next()
    turn.release()
    assert _ask(FrontTurns(0, 16), b"a", grants, "x") is None


async def test_a_forgotten_waiter_gets_nothing_and_a_turn_held_too_long_is_released() -> None:
    turns, grants = FrontTurns(1, 16, max_hold_s=0.05), Grants()
    held = _ask(turns, b"a", grants, "a0")
    gone = _ask(turns, b"a", grants, "gone")
    assert isinstance(gone, Waiter)
    turns.forget(gone)
    assert turns.waiting == 0
    assert isinstance(_ask(turns, b"b", grants, "b1"), Waiter)
    name, turn = await grants.next()  # released by its hold limit, not by its holder
    assert name == "b1" and turns.running == 1
    turn.release()
    assert isinstance(held, Turn)
    held.release()  # released already: nothing more
    assert (turns.running, turns.waiting) == (0, 0)


async def test_while_another_request_is_in_flight_execs_start_only_up_to_ahead() -> None:
    turns, grants = FrontTurns(4, 16, ahead=1), Grants()
    loop = asyncio.get_running_loop()
    held = [_ask(turns, b"a", grants, f"a{n}") for n in range(2)]
    other = turns.other(loop)
    assert isinstance(other, Other) and turns.others == 1
    assert isinstance(_ask(turns, b"a", grants, "late"), Waiter)  # 2 running: over ahead
    first = held[0]
    assert isinstance(first, Turn)
    first.release()
    await asyncio.sleep(0)  # a grant would be scheduled by now (call_soon): none is
    assert not grants.got and (turns.running, turns.waiting) == (1, 1)
    other.end()
    other.end()  # once only
    name, turn = await grants.next()
    assert name == "late" and turns.others == 0 and turns.running == 2
    second = _ask(turns, b"a", grants, "free")  # nothing else in flight: up to 4 again
    assert isinstance(second, Turn)
    for done in (turn, second, held[1]):
        assert isinstance(done, Turn)
        done.release()
    assert (turns.running, turns.waiting, turns.others) == (0, 0, 0)


async def test_a_long_other_request_stops_counting_after_other_hold_s() -> None:
    turns, grants = FrontTurns(2, 16, ahead=1, other_hold_s=0.05), Grants()
    held = _ask(turns, b"a", grants, "a0")
    other = turns.other(asyncio.get_running_loop())
    assert isinstance(_ask(turns, b"a", grants, "a1"), Waiter)
    name, turn = await grants.next()  # the other request still runs, no longer counted
    assert name == "a1" and turns.others == 0
    assert other is not None
    other.end()  # ended already by its limit: nothing more
    assert turns.others == 0
    for done in (held, turn):
        assert isinstance(done, Turn)
        done.release()


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Behind:
    """Stands for uvicorn's protocol behind the front: what the front gives it."""

    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class _GatewayRouter:
    """The gateway's routing as the front asks it: hosts under preview.test are its."""

    def match(self, scope: dict[str, object]) -> object | None:
        headers = dict(scope["headers"])  # type: ignore[call-overload]
        return "target" if headers.get(b"host", b"").endswith(b".preview.test") else None


class _FastPath:
    router = _GatewayRouter()

    def start(self, scope: object, client: object, keep_alive: bool) -> None:
        return None  # left to the app, as a request with a body is


async def test_requests_to_the_gateway_take_no_turn_and_do_not_count() -> None:
    from corral.api.front import front_protocol
    from corral.api.uvicorn_internals import Config, ServerState

    turns = FrontTurns(1, 16)
    base = front_protocol(30.0, 64 * 1024, 100, fast_path=lambda: _FastPath(), turns=turns)  # type: ignore[arg-type,return-value]

    def connection(host: bytes, request: bytes) -> _Behind:
        behind = _Behind()
        front = base(Config(app=None, log_config=None), ServerState(), {})  # type: ignore[arg-type]
        front._behind = lambda: behind  # type: ignore[method-assign,assignment,return-value]
        front.connection_made(_Transport())
        front.data_received(request.replace(b"HOST", host))
        return behind

    exec_run = b"POST /api/sandboxes/sb-1/exec/run HTTP/1.1\r\nhost: HOST\r\ncontent-length: 2\r\n\r\n{}"
    assert connection(b"api.test", exec_run).data.startswith(b"POST ")
    assert (turns.running, turns.waiting) == (1, 0)
    assert connection(b"api.test", exec_run).data == b""  # the bound: it waits, nothing went behind
    assert turns.waiting == 1
    assert connection(b"3000-sb-1.preview.test", exec_run).data.startswith(b"POST ")  # a sandbox's app
    assert (turns.running, turns.waiting, turns.others) == (1, 1, 0)
    assert connection(b"3000-sb-1.preview.test", b"GET / HTTP/1.1\r\nhost: HOST\r\n\r\n").data
    assert turns.others == 0
    assert connection(b"api.test", b"GET /healthz HTTP/1.1\r\nhost: HOST\r\n\r\n").data
    assert turns.others == 1


# ---- a real server ------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    port: int
    core: Core
    turns: FrontTurns
    sandbox_id: str
    fifo_dir: Path

    def fifo(self, name: str) -> Path:
        path = self.fifo_dir / name
        os.mkfifo(path)
        return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    sock = listening()
    port = port_of(sock)
    settings = make_settings(
        tmp_path_factory.mktemp("front-turns"),
        port=port,
        max_concurrent_execs=1,
        exec_turn_max_s=60.0,
        rate_limit_api=0,
    )
    app = make_app(settings)
    cfg = config(settings, app, log_level="warning")
    front = cfg.http
    assert isinstance(front, type) and issubclass(front, FrontProtocol) and front.turns is not None
    with served(cfg, sock, "corral-front-turns") as url:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as client:
            created = client.post("/api/sandboxes", json={})
            assert created.status_code == 201, created.text
        yield Served(
            url,
            port,
            app.state.core,
            front.turns,
            created.json()["sandboxID"],
            tmp_path_factory.mktemp("fifos"),
        )
        remove_sandboxes(url, KEY)


def _exec_request(run: str, word: str) -> bytes:
    """The raw bytes of an exec of ``echo word``, as a client that writes its own."""
    body = json.dumps({"cmd": "echo", "args": [word]}).encode()
    return (
        b"POST %b HTTP/1.1\r\nhost: x\r\nx-api-key: %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
        % (
            run.encode(),
            KEY.encode(),
            len(body),
            body,
        )
    )


async def _release(fifo: Path) -> None:
    """Write to ``fifo``: the command reading it (``cat``) ends. Opening blocks until it reads."""
    await asyncio.wait_for(asyncio.to_thread(fifo.write_text, "go"), 10)


async def test_an_exec_beyond_the_bound_waits_at_the_front_while_other_routes_answer(server: Served) -> None:
    fifo = server.fifo("first")
    run = f"/api/sandboxes/{server.sandbox_id}/exec/run"
    async with (
        httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as one,
        httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as two,
        httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as other,
    ):
        first = asyncio.create_task(one.post(run, json={"cmd": "cat", "args": [str(fifo)]}))
        await eventually_async(lambda: server.turns.running == 1, 10, "the first exec took no turn")
        second = asyncio.create_task(two.post(run, json={"cmd": "echo", "args": ["ok"]}))
        await eventually_async(lambda: server.turns.waiting == 1, 10, "the second exec does not wait")
        assert server.core.commands.turns.waiting == 0  # it never reached the service

        for path in ("/healthz", f"/api/sandboxes/{server.sandbox_id}", "/api/sandboxes"):
            answer = await other.get(path)
            assert answer.status_code == 200, (path, answer.text)
        assert server.turns.waiting == 1 and not second.done()

        await _release(fifo)
        done = await asyncio.wait_for(first, 10)
        assert done.status_code == 200 and done.json()["stdout"] == "go"
        after = await asyncio.wait_for(second, 10)
        assert after.status_code == 200 and after.json()["stdout"] == "ok\n"
    await eventually_async(lambda: (server.turns.running, server.turns.waiting) == (0, 0), 5)


async def test_a_waiting_exec_whose_client_leaves_is_forgotten(server: Served) -> None:
    fifo = server.fifo("second")
    run = f"/api/sandboxes/{server.sandbox_id}/exec/run"
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as one:
        first = asyncio.create_task(one.post(run, json={"cmd": "cat", "args": [str(fifo)]}))
        await eventually_async(lambda: server.turns.running == 1, 10)
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_exec_request(run, "never"))
        await writer.drain()
        await eventually_async(lambda: server.turns.waiting == 1, 10)
        writer.close()
        await eventually_async(lambda: server.turns.waiting == 0, 10, "the gone client still waits")
        assert server.turns.running == 1  # the first still holds its turn
        await _release(fifo)
        assert (await asyncio.wait_for(first, 10)).status_code == 200
        await eventually_async(lambda: server.turns.running == 0, 5, "the turn was not given back")
        again = await one.post(run, json={"cmd": "echo", "args": ["ok"]})
        assert again.status_code == 200 and again.json()["stdout"] == "ok\n"


async def test_a_request_pipelined_behind_a_waiting_exec_is_answered_after_it(server: Served) -> None:
    fifo = server.fifo("third")
    run = f"/api/sandboxes/{server.sandbox_id}/exec/run"
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as one:
        first = asyncio.create_task(one.post(run, json={"cmd": "cat", "args": [str(fifo)]}))
        await eventually_async(lambda: server.turns.running == 1, 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            _exec_request(run, "piped") + b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        await writer.drain()
        await eventually_async(lambda: server.turns.waiting == 1, 10)
        await _release(fifo)
        assert (await asyncio.wait_for(first, 10)).status_code == 200
        async with asyncio.timeout(10):
            answers = await reader.read()  # both answers, then the close
        writer.close()
        exec_at, health_at = answers.find(b"piped"), answers.find(b'"status":"ok"')
        assert answers.startswith(b"HTTP/1.1 200 ") and answers.count(b"HTTP/1.1 200 ") == 2, answers[:400]
        assert 0 < exec_at < health_at, answers[:800]
    await eventually_async(lambda: (server.turns.running, server.turns.waiting) == (0, 0), 5)
