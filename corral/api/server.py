"""Running the app under uvicorn with the options corral needs.

``UVICORN_OPTIONS`` is what every way of serving corral must pass to uvicorn:

- ``ws_per_message_deflate=False``: Node 20's built-in WebSocket (what the TypeScript
  SDK uses) fails with close code 1006 when a server negotiates permessage-deflate.
- ``ws="websockets-sansio"``: the ``websockets`` library's current implementation in
  uvicorn (``"websockets"`` there names the deprecated legacy one); it also carries the
  WebSocket Denial Response extension, so a refused handshake gets a real 401/404.
- uvloop and httptools for speed; every connection is read first by
  ``corral.api.front`` (bounded: request head size, header count, head timeout, settings
  ``http_*``; the gateway's plain requests answered there), uvicorn's httptools
  protocol behind it; lifespan on, since the app opens its core there. ``timeout_keep_alive`` is the setting ``http_keep_alive_s``,
  ``access_log`` the setting ``access_log`` (off by default).
- ``server_header=False``: no ``server: uvicorn`` (proxied answers keep the sandbox's).

uvicorn's sansio implementation logs "ASGI callable returned without completing
handshake." at ERROR after every denial response, though the client got it (it never
marks the handshake done; upstream: Kludex/uvicorn pull request 3138). ``config``
drops exactly that record, so each refused token does not page an operator. It also
drops uvicorn's "Exception in ASGI application" when the exception is the gateway's
``UpstreamAborted`` (a sandbox's server failed mid-response; the gateway logged it and
cutting the client's connection is the intended outcome).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

from corral.api.app import CorralApp, create_app
from corral.api.front import FastPathSource, front_protocol
from corral.api.front_turns import FrontTurns
from corral.gateway.fast_path import FastPath
from corral.gateway.forward import UpstreamAborted
from corral.settings import Settings

UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "server_header": False,
    "lifespan": "on",
    "timeout_graceful_shutdown": 10,
}


def config(settings: Settings, app: FastAPI | None = None, **options: Any) -> uvicorn.Config:
    """A uvicorn config for ``app`` (default: ``create_app(settings)``) on the settings'
    host and port; ``options`` override ``UVICORN_OPTIONS``. Its connections answer with
    the fast path of the app's gateway (``fast_path_of``)."""
    app = app or create_app(settings)
    limits = {
        "http": front_protocol(
            settings.http_head_timeout_s,
            settings.http_max_header_bytes,
            settings.http_max_headers,
            fast_path=fast_path_of(app),
            turns=FrontTurns(
                settings.max_concurrent_execs, settings.max_queued_execs, settings.exec_turn_max_s
            ),
        ),
        "timeout_keep_alive": settings.http_keep_alive_s,
        "access_log": settings.access_log,
    }
    merged = {**UVICORN_OPTIONS, **limits, "host": settings.host, "port": settings.port, **options}
    result = uvicorn.Config(app, **merged)  # configures uvicorn's logging
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialNoise) for f in error_log.filters):
        error_log.addFilter(_DenialNoise())
    return result


def serve(settings: Settings, sock: socket.socket | None = None, **overrides: Any) -> None:
    """Serve corral until interrupted, on ``sock`` (a listening socket, which the server
    then owns and closes) or else on the settings' host and port. ``overrides`` go to
    ``create_app``."""
    configure_logging()
    uvicorn.Server(config(settings, create_app(settings, **overrides))).run(sockets=[sock] if sock else None)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """corral's log: one line per record on stderr, INFO and above, set before the app
    is built, so a library that configures logging only when nobody has (the mcp SDK's
    server does, with a console handler that wraps lines) leaves it as it is. A process
    that set up its root logger already (a test run) keeps its own."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def fast_path_of(app: FastAPI) -> FastPathSource:
    """The fast path of ``app``'s gateway while its lifespan holds the gateway open (a
    ``CorralApp``'s; any other app has none, and the front sends everything to it)."""
    if not isinstance(app, CorralApp):
        return lambda: None

    def fast_path() -> FastPath | None:
        return app.gateway.fast_path if app.gateway is not None else None

    return fast_path


class _DenialNoise(logging.Filter):
    """Drops uvicorn's spurious errors: after a WebSocket denial response, and for a
    gateway response cut on purpose (see above)."""

    MESSAGE = "ASGI callable returned without completing handshake."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UpstreamAborted):
            return False
        return record.getMessage() != self.MESSAGE
