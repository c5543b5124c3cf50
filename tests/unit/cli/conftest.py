"""Fixtures of the CLI tests: a real HTTP server (the stub) on a socket bound here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from tests.support.server_thread import served
from tests.support.sockets import listening
from tests.unit.cli.stub_server import KEY, StubState, build_app


@dataclass
class Stub:
    url: str
    key: str
    state: StubState


@pytest.fixture(scope="module")
def stub_server() -> Iterator[tuple[str, StubState]]:
    state = StubState()
    config = uvicorn.Config(build_app(state), log_level="warning", lifespan="off", loop="asyncio")
    with served(config, listening(), "corral-stub") as url:
        yield url, state


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
