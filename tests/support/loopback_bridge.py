"""Loopback ports carried across network namespaces over Unix sockets (a Unix socket is
a path, which every namespace sharing the filesystem can reach).

``pipe_unix_to_tcp(path, port)`` serves, in this process's namespace, the Unix socket
``path`` as a door to ``127.0.0.1:port``. Run as a program (``python -m
tests.support.loopback_bridge``) inside a namespace of its own (``unshare --net``), it
brings its loopback up, opens ``127.0.0.1:<port>`` there as a door to the Unix socket of
the host's side, runs a command (the browser), and once the command has written its
DevTools port to a file, serves that port on a second Unix socket for the host's side
to reach::

    python -m tests.support.loopback_bridge PORT HOST_SOCKET DEVTOOLS_FILE DEVTOOLS_SOCKET -- CMD...

It ends with the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


def _relay(open_other: Opener) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            other_reader, other_writer = await open_other()
        except OSError:
            writer.close()
            return
        await asyncio.gather(_copy(reader, other_writer), _copy(other_reader, writer))

    return handle


async def pipe_unix_to_tcp(path: Path, port: int) -> asyncio.Server:
    """Serves ``path`` as a door to ``127.0.0.1:port`` of this namespace."""
    return await asyncio.start_unix_server(
        _relay(lambda: asyncio.open_connection("127.0.0.1", port)), path=str(path)
    )


async def _inside(
    port: int, host_socket: str, devtools_file: Path, devtools_socket: Path, cmd: list[str]
) -> int:
    server = await asyncio.start_server(
        _relay(lambda: asyncio.open_unix_connection(host_socket)), "127.0.0.1", port
    )
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.DEVNULL)
    async with server:
        while proc.returncode is None and not (devtools_file.exists() and devtools_file.read_text().strip()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
        if proc.returncode is None:
            devtools = int(devtools_file.read_text().split()[0])
            async with await pipe_unix_to_tcp(devtools_socket, devtools):
                return await proc.wait()
        return proc.returncode


def main(argv: list[str]) -> int:
    split = argv.index("--")
    port, host_socket, devtools_file, devtools_socket = argv[:split]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # down in a new namespace
    return asyncio.run(
        _inside(int(port), host_socket, Path(devtools_file), Path(devtools_socket), argv[split + 1 :])
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
