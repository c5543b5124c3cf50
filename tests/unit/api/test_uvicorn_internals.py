"""uvicorn's private names the front needs (``corral.api.uvicorn_internals``) are there and
have the shape it relies on. Each failure names what is gone or changed and the uvicorn
version, so an upgrade that breaks the front says so here, not as a server test's hang or
a wrong answer. (A name gone fails the import of the module itself, and so of this tree's
conftest, with the same kind of message: the last test shows it.)"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
import types
from importlib.metadata import version
from typing import Any

import pytest

UVICORN = version("uvicorn")

NAMES = [
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
    ("uvicorn.server", "ServerState"),
    ("uvicorn.config", "Config"),
]
PROTOCOL_PARAMETERS = ("config", "server_state", "app_state", "_loop")
PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_response_complete",
    "shutdown",
    "pause_writing",
    "resume_writing",
    "handle_websocket_upgrade",
)
PROTOCOL_ATTRIBUTES = ("connections", "timeout_keep_alive_task")
STATE_ATTRIBUTES = {"connections": set, "total_requests": int, "default_headers": list}
CONFIG_ATTRIBUTES = ("timeout_keep_alive", "access_log")


def _gone(what: str) -> str:
    return (
        f"uvicorn {UVICORN}: {what}; corral's HTTP front needs it "
        "(see corral/api/uvicorn_internals.py, and the uvicorn pin in pyproject.toml)"
    )


def _name(module: str, name: str) -> Any:
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        pytest.fail(_gone(f"module {module} is gone ({exc})"))
    if found is None:
        pytest.fail(_gone(f"{module}.{name} is gone"))
    return found


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


@pytest.mark.parametrize(("module", "name"), NAMES, ids=[name for _, name in NAMES])
def test_each_name_is_there(module: str, name: str) -> None:
    _name(module, name)


def test_the_module_imports_them() -> None:
    from corral.api import uvicorn_internals

    for module, name in NAMES:
        assert getattr(uvicorn_internals, name) is _name(module, name)


def test_the_http_protocol_has_the_shape_the_protocol_behind_needs() -> None:
    protocol = _name("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol")
    parameters = inspect.signature(protocol).parameters
    for parameter in PROTOCOL_PARAMETERS:
        assert parameter in parameters, _gone(f"HttpToolsProtocol() takes no {parameter}=")
    for method in PROTOCOL_METHODS:
        assert callable(getattr(protocol, method, None)), _gone(f"HttpToolsProtocol.{method} is gone")
    handover = inspect.getsource(protocol.handle_websocket_upgrade)
    assert "set_protocol(" in handover, _gone(
        "HttpToolsProtocol.handle_websocket_upgrade no longer hands the connection over by "
        "transport.set_protocol (the front's BehindTransport would not see it)"
    )

    config = _name("uvicorn.config", "Config")(app=_app, log_config=None)
    state = _name("uvicorn.server", "ServerState")()
    loop = asyncio.new_event_loop()
    try:
        made = protocol(config=config, server_state=state, app_state={}, _loop=loop)
    finally:
        loop.close()
    for attribute in PROTOCOL_ATTRIBUTES:
        assert hasattr(made, attribute), _gone(f"an HttpToolsProtocol has no {attribute}")
    assert made.connections is state.connections, _gone(
        "HttpToolsProtocol.connections is no longer the server state's set"
    )


def test_the_server_state_has_what_the_front_joins() -> None:
    state = _name("uvicorn.server", "ServerState")()
    for attribute, kind in STATE_ATTRIBUTES.items():
        assert isinstance(getattr(state, attribute, None), kind), _gone(
            f"ServerState.{attribute} is gone or no longer a {kind.__name__}"
        )


async def test_the_server_keeps_the_date_in_the_default_headers() -> None:
    """The fast path's answers take their ``date`` from ``ServerState.default_headers``."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app=_app, log_config=None))
    state = getattr(server, "server_state", None)
    assert isinstance(state, _name("uvicorn.server", "ServerState")), _gone("Server.server_state is gone")
    await server.on_tick(0)
    assert any(name == b"date" for name, _ in state.default_headers), _gone(
        "Server.on_tick no longer puts the date header in ServerState.default_headers"
    )


def test_the_config_has_what_the_front_reads_and_takes_corrals_options() -> None:
    from corral.api.server import UVICORN_OPTIONS

    config = _name("uvicorn.config", "Config")(app=_app, log_config=None, **UVICORN_OPTIONS)
    for attribute in CONFIG_ATTRIBUTES:
        assert hasattr(config, attribute), _gone(f"Config.{attribute} is gone")
    config.load()
    assert config.ws_protocol_class is not None, _gone(f"ws={UVICORN_OPTIONS['ws']!r} is not served")


def test_a_missing_name_stops_the_import_naming_it_and_the_uvicorn_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn.server", types.ModuleType("uvicorn.server"))
    monkeypatch.delitem(sys.modules, "corral.api.uvicorn_internals")
    with pytest.raises(ImportError, match=rf"^uvicorn {UVICORN}: cannot import name 'ServerState'") as caught:
        importlib.import_module("corral.api.uvicorn_internals")
    assert "corral's HTTP front needs it" in str(caught.value)
