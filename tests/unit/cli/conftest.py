"""Fixtures of the CLI tests: a real HTTP server (the stub) on a free local port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from tests.unit.cli.stub_server import KEY, StubState, build_app


@dataclass
class Stub:
    url: str
    key: str
    state: StubState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stub_server() -> Iterator[tuple[str, StubState]]:
    state = StubState()
    port = free_port()
    config = uvicorn.Config(
        build_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="off", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the stub server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", state
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def stub(stub_server: tuple[str, StubState], monkeypatch: pytest.MonkeyPatch) -> Stub:
    """The stub with fresh state; CORRAL_URL and CORRAL_API_KEY point at it."""
    url, state = stub_server
    state.sandboxes.clear()
    state.sessions.clear()
    state.calls.clear()
    state.drop_exec_socket = False
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_API_KEY", KEY)
    return Stub(url, KEY, state)
