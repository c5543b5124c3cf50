"""A uvicorn server in a thread of the test process, on a socket the test bound."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from tests.support.conditions import eventually
from tests.support.sockets import port_of

START_TIMEOUT_S = 15.0


@contextmanager
def served(config: uvicorn.Config, sock: socket.socket, name: str) -> Iterator[str]:
    """``config``'s app served on ``sock`` (listening; the server closes it when it stops)
    in a daemon thread named ``name``; yields ``http://127.0.0.1:<port>`` once it accepts
    connections, then stops it."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()

    def started() -> bool:  # set by uvicorn's own loop: nothing to wait on but the flag
        if not thread.is_alive():
            raise RuntimeError(f"{name} did not start")
        return server.started

    eventually(started, START_TIMEOUT_S, f"{name} did not start")
    try:
        yield f"http://127.0.0.1:{port_of(sock)}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
