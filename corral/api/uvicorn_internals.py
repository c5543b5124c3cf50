"""uvicorn's private names that corral's HTTP front builds on, imported here and nowhere
else: the one place to look when uvicorn changes. ``pyproject.toml`` allows only the
uvicorn minor corral is tested with, since none of this is uvicorn's public API.

- ``HttpToolsProtocol`` (``uvicorn.protocols.http.httptools_impl``): the protocol behind
  the front (``corral.api.behind.BehindProtocol``) is one. corral builds it with
  ``config``, ``server_state``, ``app_state``, ``_loop``; overrides ``connection_made``
  and ``on_response_complete``; calls ``shutdown``, ``data_received``,
  ``connection_lost``, ``pause_writing``, ``resume_writing``; reads and clears its
  ``connections`` and ``timeout_keep_alive_task``. Its WebSocket hand-over
  (``handle_websocket_upgrade``) gives the connection to uvicorn's WebSocket protocol by
  the transport's ``set_protocol``, which the front's ``BehindTransport`` catches.
- ``ServerState`` (``uvicorn.server``): the server's shared state, which the front joins
  as one of uvicorn's connections. uvicorn's graceful shutdown calls ``shutdown()`` on
  each of its ``connections`` and waits for the set to empty; the front counts the
  requests the fast path answers in ``total_requests``; the fast path's answers carry its
  ``default_headers`` (the ``date`` header uvicorn refreshes every second).
- ``Config`` (also public, as ``uvicorn.Config``): what uvicorn passes every protocol;
  the front reads its ``timeout_keep_alive`` and ``access_log``.

A uvicorn without one of these names fails this module's import (and so the server's
start and every test that imports it) with an ImportError naming the name and the
uvicorn version. ``tests/unit/api/test_uvicorn_internals.py`` checks the attributes
above, naming what is gone or changed and the uvicorn version; the front's behaviour is
tested in ``tests/unit/gateway/test_behind.py`` and ``test_fast_path.py``.
"""

from __future__ import annotations

from importlib.metadata import version

try:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState
except ImportError as exc:
    raise ImportError(
        f"uvicorn {version('uvicorn')}: {exc}; corral's HTTP front needs it "
        "(corral/api/uvicorn_internals.py; pyproject.toml allows the uvicorn minor corral is tested with)"
    ) from exc

__all__ = ["Config", "HttpToolsProtocol", "ServerState"]
