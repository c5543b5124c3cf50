"""A client's WebSocket pumped to and from an attachment to a session in a sandbox.

Exec sessions use the spec's framed protocol: client frames ``0x00 + stdin``; server
frames ``0x01 + stdout``, ``0x02 + stderr``, ``0x04`` (end of scrollback) and
``0x03 + int32 BE`` (exit code), after which the server closes with 1000. PTYs carry
raw terminal bytes both ways; the server closes with 1000 when the shell exits. Text
frames from clients are taken as their UTF-8 bytes. Server frames are always binary.

Contracts:
- Two tasks per socket: output to the client, input to the session. Whichever ends
  first cancels the other.
- A client that disconnects only detaches: the session keeps running in the agent.
- Each message of input is a use of the sandbox (``SandboxService.processes_of``): it
  defers the idle timeout, and a paused sandbox is resumed before the input is sent
  (while it runs, that is a lookup in memory).
- A client that offered the subprotocol ``corral`` (with its credential beside it,
  ``corral.api.credentials``) is accepted with it.
- If the agent's stream ends without an exit, or fails, the socket is closed with 1011
  (the SDKs then report exit code -1).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketState

from corral.api.credentials import SUBPROTOCOL
from corral.api.opencomputer import mapping
from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import SessionEvent, Stream
from corral.errors import CorralError
from corral.ports import Attachment

log = logging.getLogger("corral.api.ws")

STDIN_PREFIX = 0x00
NORMAL_CLOSURE = 1000
INTERNAL_ERROR = 1011


async def attach(
    ws: WebSocket,
    core: Core,
    principal: Principal,
    sandbox_id: str,
    session_id: str,
    ids: tuple[str, ...],
    noun: str,
    *,
    framed: bool,
) -> None:
    """Attach ``ws`` to a session (``ids``: its id prefixes, ``noun``: what a malformed id
    is called in the 404), accept it, and bridge until either side ends."""
    session_id = mapping.path_id(session_id, ids, noun)
    attachment = await core.commands.attach(principal, sandbox_id, session_id)
    async with attachment as att:
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in ws.scope.get("subprotocols", ()) else None)
        await pump(ws, att, framed=framed, use=lambda: core.sandboxes.processes_of(principal, sandbox_id))


def frame(event: SessionEvent) -> bytes:
    """The spec's binary frame for one event of an exec session."""
    if event.stream == Stream.EXIT:
        return bytes([Stream.EXIT]) + struct.pack(">i", event.exit_code or 0)
    return bytes([event.stream]) + event.data


async def pump(
    ws: WebSocket, attachment: Attachment, *, framed: bool, use: Callable[[], Awaitable[object]]
) -> None:
    """Run until the session exits, the client leaves or the agent fails (see above).

    ``ws`` must already be accepted; ``use`` is awaited before each input is sent.
    """
    output = asyncio.create_task(_output(ws, attachment, framed), name="ws-output")
    input_ = asyncio.create_task(_input(ws, attachment, framed, use), name="ws-input")
    try:
        await asyncio.wait({output, input_}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (output, input_):
            task.cancel()
        await asyncio.gather(output, input_, return_exceptions=True)
    for task in (output, input_):
        if not task.cancelled() and task.exception() is not None:  # mostly: the client is gone
            log.debug("%s ended: %r", task.get_name(), task.exception())


async def _output(ws: WebSocket, attachment: Attachment, framed: bool) -> None:
    code, reason = INTERNAL_ERROR, "the sandbox closed the session stream"
    try:
        async for event in attachment:
            if event.stream == Stream.EXIT:
                if framed:
                    await ws.send_bytes(frame(event))
                code, reason = NORMAL_CLOSURE, ""
                break
            if framed:
                await ws.send_bytes(frame(event))
            elif event.stream in (Stream.STDOUT, Stream.STDERR) and event.data:
                await ws.send_bytes(event.data)
    except CorralError as exc:
        reason = exc.message
    await _close(ws, code, reason)


async def _input(
    ws: WebSocket, attachment: Attachment, framed: bool, use: Callable[[], Awaitable[object]]
) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data: bytes | None = message.get("bytes")
        if data is None:
            data = str(message.get("text") or "").encode()
        if framed:
            if len(data) < 2 or data[0] != STDIN_PREFIX:
                continue  # empty, or not a client frame of the protocol
            data = data[1:]
        if not data:
            continue
        try:
            await use()
            await attachment.send_stdin(data)
        except CorralError as exc:  # e.g. the process has exited; its exit comes as output
            log.debug("stdin dropped: %s", exc.message)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state != WebSocketState.CONNECTED:
        return
    try:
        await ws.close(code=code, reason=reason.encode()[:123].decode(errors="ignore"))
    except (RuntimeError, OSError):  # the client is already gone
        pass
