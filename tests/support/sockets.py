"""Sockets a test binds itself, so no port is chosen, released and bound again (the
race of a ``free_port()``: another process may take the port in between)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def listening(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a port the kernel chose on ``host``, already listening:
    hand it to the server (which then owns it) and connect to ``port_of(sock)``."""
    return socket.create_server((host, 0))


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


@contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on ``host`` where nothing listens and nothing can start to, while the
    block runs: bound but not listening, so a connection is refused."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        yield port_of(sock)
