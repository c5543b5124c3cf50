"""A client's WebSocket relayed to and from a WebSocket server inside a sandbox.

The sandbox's server is connected first (``websockets`` client, no compression, no
pings of its own: uvicorn pings the client), with the client's subprotocols, cookies,
``Origin`` and other end-to-end headers (see ``headers``) and the client's ``Host``.
Only then is the client accepted, with the subprotocol the server chose and the
cookies it set. A server that refuses the upgrade has its answer (status, headers
but CORS, body) passed to the client; one that cannot be reached is a 502.

Then messages flow both ways as they are (text stays text, binary stays binary, one
message per message) and a close on either side is passed on with its code and
reason. Codes that cannot be sent on the wire become: 1005 (none given) → 1000, an
abnormal end (1006, the server died) → 1011.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

from corral.api.credentials import without_query_param
from corral.errors import SandboxError
from corral.gateway.access import Grant
from corral.gateway.headers import request_headers, response_headers
from corral.gateway.replies import reply
from corral.gateway.routing import Target
from corral.gateway.upstream import UpstreamLimits
from corral.services.sandboxes import SandboxService

log = logging.getLogger("corral.gateway")

_UNSENDABLE: dict[int, int] = {
    CloseCode.NO_STATUS_RCVD: 1000,
    CloseCode.ABNORMAL_CLOSURE: 1011,
    CloseCode.TLS_HANDSHAKE: 1011,
}


def _sendable(code: int | None) -> int:
    if code is None:
        return 1011
    if code in _UNSENDABLE:
        return _UNSENDABLE[code]
    return code if 1000 <= code <= 1014 or 3000 <= code <= 4999 else 1000


async def relay(
    target: Target,
    grant: Grant,
    scope: Any,
    receive: Any,
    send: Any,
    limits: UpstreamLimits,
    max_message: int,
    sandboxes: SandboxService,
) -> None:
    """Serve one WebSocket (see the module docstring). SandboxError before the client
    is accepted (the gateway answers 502); nothing after."""
    if (await receive())["type"] != "websocket.connect":
        return
    headers, _, _ = request_headers(
        scope, target.host, target.prefix, drop_authorization=grant.drop_authorization, websocket=True
    )
    path = target.path
    if grant.query_token:
        base, _, query = path.partition(b"?")
        query = without_query_param(query, "token")
        path = base + b"?" + query if query else base
    address, port = grant.route.address, target.port
    user_agent = next((v.decode("latin-1") for n, v in headers if n == b"user-agent"), None)
    extra = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n != b"user-agent"]
    try:
        uri = f"ws://{target.host or f'{address}:{port}'}{path.decode('latin-1')}"
        try:
            upstream = await _connect(uri, address, port, scope, extra, user_agent, limits, max_message)
        except InvalidURI:  # a Host the client sent that is no URI authority: use the address
            uri = f"ws://{address}:{port}{path.decode('latin-1')}"
            upstream = await _connect(uri, address, port, scope, extra, user_agent, limits, max_message)
    except InvalidStatus as exc:
        await _refused(exc, target, scope, send)
        return
    except TimeoutError as exc:
        raise SandboxError(f"port {port} did not complete a WebSocket handshake in time") from exc
    except ConnectionRefusedError as exc:
        raise SandboxError(f"nothing is listening on port {port}") from exc
    except (OSError, InvalidHandshake) as exc:
        raise SandboxError(f"port {port} failed the WebSocket handshake: {exc}") from exc

    async with upstream:
        assert upstream.response is not None  # set by the handshake
        cookies = [
            (b"set-cookie", v.encode("latin-1")) for v in upstream.response.headers.get_all("Set-Cookie")
        ]
        cookies = response_headers(cookies, target.prefix, [])
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": cookies})
        inbound = asyncio.create_task(_inbound(upstream, receive, sandboxes, grant.route.sandbox_id))
        try:
            await _outbound(upstream, send, sandboxes, grant.route.sandbox_id)
        finally:
            inbound.cancel()
            await asyncio.gather(inbound, return_exceptions=True)


async def _connect(
    uri: str,
    address: str,
    port: int,
    scope: Any,
    headers: list[tuple[str, str]],
    user_agent: str | None,
    limits: UpstreamLimits,
    max_message: int,
) -> ClientConnection:
    subprotocols = scope.get("subprotocols") or None
    return await connect(
        uri,
        host=address,
        port=port,
        subprotocols=subprotocols,
        additional_headers=headers,
        user_agent_header=user_agent,
        compression=None,
        proxy=None,
        open_timeout=limits.connect_timeout + limits.head_timeout,
        ping_interval=None,
        close_timeout=5,
        max_size=max_message,
    )


async def _outbound(
    upstream: ClientConnection, send: Any, sandboxes: SandboxService, sandbox_id: str
) -> None:
    """The sandbox's messages to the client; then its close."""
    try:
        async for message in upstream:
            sandboxes.touch(sandbox_id)
            if isinstance(message, str):
                await send({"type": "websocket.send", "text": message})
            else:
                await send({"type": "websocket.send", "bytes": message})
    except ConnectionClosed:
        pass
    except OSError:  # the client is gone
        return
    received = upstream.protocol.close_rcvd
    code = _sendable(received.code if received else None)
    reason = received.reason if received else "the server in the sandbox went away"
    try:
        await send({"type": "websocket.close", "code": code, "reason": reason})
    except (OSError, RuntimeError):  # the client closed first
        pass


async def _inbound(
    upstream: ClientConnection, receive: Any, sandboxes: SandboxService, sandbox_id: str
) -> None:
    """The client's messages to the sandbox; then its close."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            await sandboxes.use(sandbox_id)  # resumes it if it was paused since the handshake
            text = message.get("text")
            try:
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            except ConnectionClosed:
                return
        elif kind == "websocket.disconnect":
            code = _sendable(message.get("code", 1000))
            await upstream.close(code, str(message.get("reason") or ""))
            return


async def _refused(exc: InvalidStatus, target: Target, scope: Any, send: Any) -> None:
    """Pass a server's refusal of the upgrade on to the client."""
    response = exc.response
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.raw_items()]
    raw = [(k, v) for k, v in raw if k != b"content-length"]
    await reply(
        scope,
        send,
        response.status_code,
        response_headers(raw, target.prefix, []),
        bytes(response.body or b""),
    )
