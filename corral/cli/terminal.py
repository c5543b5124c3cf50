"""An interactive terminal on a sandbox, through its PTY WebSocket.

``POST /api/sandboxes/{id}/pty`` opens a PTY sized like the local terminal; the
WebSocket ``/api/sandboxes/{id}/pty/{session}`` then carries raw bytes both ways (no
stream prefix). While attached, the local tty is in raw mode so every key (Ctrl-C,
Ctrl-D, arrows) goes to the sandbox; SIGWINCH sends ``POST .../pty/{session}/resize``.

Contract: ``run_terminal`` returns when the remote side closes the WebSocket (the
shell exited) or local stdin ends and the remote side then closes; the local tty
mode is restored on every path, and the PTY session is deleted best-effort. Raises
CliError when the PTY cannot be opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from typing import BinaryIO

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from corral.cli.client import ApiClient, check, refused
from corral.cli.console import CliError

READ_SIZE = 64 * 1024


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put the tty ``fd`` in raw mode for the block; a no-op when it is not a tty."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the tty ``fd``; where it has none (not a tty, or a size of 0, as
    a fresh pseudo-terminal has), ``COLUMNS``/``LINES`` or 80x24."""
    fallback = shutil.get_terminal_size((80, 24))
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return fallback.columns, fallback.lines
    return size.columns or fallback.columns, size.lines or fallback.lines


async def run_terminal(
    api: ApiClient,
    sandbox_id: str,
    *,
    stdin_fd: int | None = None,
    stdout: BinaryIO | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    fd = _stdin_fd() if stdin_fd is None else stdin_fd
    out = stdout or sys.stdout.buffer
    async with api.async_client(transport) as http:
        cols, rows = terminal_size(fd)
        session_id = await _open_pty(http, api, sandbox_id, cols, rows)
        try:
            url = api.ws_url(f"/sandboxes/{sandbox_id}/pty/{session_id}")
            try:
                ws = await connect(url, additional_headers=api.headers, max_size=None, open_timeout=30)
            except InvalidStatus as exc:
                raise refused(exc, "the terminal") from exc
            except (InvalidHandshake, OSError, TimeoutError) as exc:
                raise CliError(f"cannot attach to the terminal: {exc}") from exc
            async with ws:
                with raw_mode(fd):
                    await _pump(ws, http, sandbox_id, session_id, fd, out)
        finally:
            with contextlib.suppress(httpx.HTTPError):
                await http.delete(f"/sandboxes/{sandbox_id}/pty/{session_id}")


async def _open_pty(http: httpx.AsyncClient, api: ApiClient, sandbox_id: str, cols: int, rows: int) -> str:
    try:
        response = await http.post(f"/sandboxes/{sandbox_id}/pty", json={"cols": cols, "rows": rows})
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach corral at {api.url}: {exc}") from exc
    check(response, api.url)
    session_id = response.json().get("sessionID")
    if not isinstance(session_id, str) or not session_id:
        raise CliError("the server did not return a PTY session id")
    return session_id


async def _pump(
    ws: ClientConnection, http: httpx.AsyncClient, sandbox_id: str, session_id: str, fd: int, out: BinaryIO
) -> None:
    """Copy stdin to the WebSocket and the WebSocket to ``out`` until the remote closes."""
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes | None] = asyncio.Queue()

    def on_stdin() -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            keys.put_nowait(None)
        else:
            keys.put_nowait(data)

    async def resize() -> None:
        cols, rows = terminal_size(fd)
        with contextlib.suppress(httpx.HTTPError):
            await http.post(
                f"/sandboxes/{sandbox_id}/pty/{session_id}/resize", json={"cols": cols, "rows": rows}
            )

    async def send() -> None:
        while (data := await keys.get()) is not None:
            await ws.send(data)

    async def receive() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                out.write(message.encode() if isinstance(message, str) else message)
                out.flush()

    pending: set[asyncio.Task[None]] = set()
    reading = _watch(loop, fd, on_stdin, keys)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGWINCH, lambda: pending.add(loop.create_task(resize())))
    sender = loop.create_task(send())
    try:
        await receive()
    finally:
        if reading:
            loop.remove_reader(fd)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGWINCH)
        sender.cancel()
        for task in (sender, *pending):
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, httpx.HTTPError):
                await task


def _stdin_fd() -> int:
    """The fd of stdin, or -1 when the process has none."""
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return -1


def _watch(
    loop: asyncio.AbstractEventLoop, fd: int, on_stdin: Callable[[], None], keys: asyncio.Queue[bytes | None]
) -> bool:
    """Watch ``fd`` for input; True if it is watched. Input that cannot be polled (a
    regular file, /dev/null) is read whole at once; no stdin at all ends input."""
    if fd >= 0:
        try:
            loop.add_reader(fd, on_stdin)
            return True
        except (OSError, ValueError):
            try:
                while chunk := os.read(fd, READ_SIZE):
                    keys.put_nowait(chunk)
            except OSError:
                pass
    keys.put_nowait(None)
    return False
