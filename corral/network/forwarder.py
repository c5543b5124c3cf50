"""The service-binding forwarder (DESIGN.md decision 8): the ``corral.ports.Forwarder``.

It listens on the sandboxes' side of corral (the bridge address, beside the resolver;
127.0.0.1 for the process runtime) and takes plain HTTP/1.1 from sandboxes. A sandbox
that was granted bindings calls ``http://<bridge>:<port>/<token>/<name>/<path>``: the
forwarder sends the request to the binding's base URL + ``<path>`` (and the query),
over HTTP or HTTPS, with the binding's header set to its secret, and passes the answer
back as it arrives (status, headers, body chunk by chunk: streaming answers stream).

Who calls: a grant holds the sandbox's address on the bridge and an unguessable token
(192 bits). A request is served only when its token names a grant, the connection
comes from that grant's address (the bridge drops spoofed source addresses, so the
address names one sandbox: ``firewall.py``) and the name is one the grant holds.
Otherwise 404 (unknown token or name) or 403 (a token used from another address).

What is never passed: the secret to the sandbox (the binding's header the sandbox sent
is replaced; an upstream answer header holding the secret is dropped), hop-by-hop
headers either way, ``Host`` (set from the upstream URL), the token (not in the path
sent upstream, nor in the audit trail). Redirects are passed back, never followed, so
the secret goes to the binding's URL only. Proxy settings of the environment are not
used (``trust_env=False``).

Bounds (``ForwarderConfig``, which also names the CAs an HTTPS upstream's certificate
is checked against): connections in all and per address (4 for an address without a
grant; beyond: closed at once), the request head (16 KiB, h11's bound, and whole within
the time to read it), the request body (413), calls at once per sandbox
(429), the time to read a head and between requests, the time to connect upstream (504
on expiry, 502 for other upstream failures, an unverified certificate among them) and
a deadline over the whole call, streaming included (the answer is cut when it passes).
Paths holding ``.`` or ``..`` segments are refused (400), so a call stays under the
binding's base path.

Every call from a sandbox holding a grant is reported to ``on_call(sandbox_id, org_id,
call)``: ``binding``, ``method``, ``path`` (without the query), ``status``,
``duration_ms`` (``error`` when the answer was cut); for a ``metered`` binding (a model
API) also ``model``, ``input_tokens`` and ``output_tokens``, read from the answer as it
passed (``corral.domain.model_usage``: JSON or server-sent events, streaming is not
held up). ``on_call`` must not block.

Contracts: ``start`` raises OSError when it cannot bind; ``grant`` and ``revoke`` are
synchronous and take effect for the next request (calls in flight finish); ``revoke``
and ``close`` are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import h11
import httpx

from corral.domain.bindings import Binding
from corral.domain.model_usage import UsageReader
from corral.ports import BindingCallFn

log = logging.getLogger("corral.network")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"expect",
    }
)
MAX_PATH_RECORDED = 512
UNGRANTED_CONNECTIONS = 4  # per address without a grant: it can only be refused
READ_SIZE = 65536


@dataclass(frozen=True)
class ForwarderConfig:
    """Bounds, and the CAs trusted for HTTPS upstreams (``ca_file``: a PEM file, instead
    of httpx's bundle; None: the bundle)."""

    max_body: int = 32 * 1024 * 1024  # bytes of one request body
    max_head: int = 16 * 1024  # bytes of one request head
    calls_per_sandbox: int = 16  # calls of one sandbox at once
    connections_per_address: int = 64
    connections: int = 2048
    chunk_timeout: float = 10.0  # for a body's next chunk
    idle_timeout: float = 30.0  # for the next request (its whole head) on a connection
    connect_timeout: float = 10.0
    deadline: float = 600.0  # a whole call, the answer's streaming included
    ca_file: str | None = None


@dataclass
class _Grant:
    sandbox_id: str
    org_id: str
    address: str
    token: str
    bindings: dict[str, Binding] = field(default_factory=dict)
    calls: int = 0


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Forwarder:
    """See the module docstring. Nothing happens at construction."""

    def __init__(self, on_call: BindingCallFn | None = None, config: ForwarderConfig | None = None) -> None:
        self.on_call = on_call
        self.config = config or ForwarderConfig()
        self.host = ""
        self.port = 0
        self._grants: dict[str, _Grant] = {}  # by sandbox id
        self._by_token: dict[str, _Grant] = {}
        self._open: dict[str, int] = {}  # connections per address
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the port --------------------------------------------------------------------

    def grant(self, sandbox_id: str, address: str, bindings: Sequence[Binding]) -> dict[str, str]:
        held = self._grants.get(sandbox_id)
        if held is None or held.address != address:
            if held is not None:
                self.revoke(sandbox_id)
            org = bindings[0].org_id if bindings else ""
            held = _Grant(sandbox_id, org, address, secrets.token_urlsafe(24))
            self._grants[sandbox_id] = self._by_token[held.token] = held
        held.bindings.update((b.name, b) for b in bindings)
        return {b.name: f"http://{self.host}:{self.port}/{held.token}/{b.name}" for b in bindings}

    def revoke(self, sandbox_id: str) -> None:
        held = self._grants.pop(sandbox_id, None)
        if held is not None:
            self._by_token.pop(held.token, None)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int = 0) -> None:
        """Listen on ``host:port`` (0: a free port, then in :attr:`port`)."""
        config = self.config
        verify: ssl.SSLContext | bool = True  # httpx's bundle (certifi)
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=config.ca_file)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.deadline, connect=config.connect_timeout),
            # as many upstream connections as calls may be under way (httpx's default
            # of 100 would make the 101st wait for a slot, then fail as a timeout)
            limits=httpx.Limits(max_connections=config.connections, max_keepalive_connections=64),
            verify=verify,
            follow_redirects=False,
            trust_env=False,
        )
        try:
            self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        except OSError:
            await self._client.aclose()
            self._client = None
            raise
        self.host, self.port = host, int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        server, self._server = self._server, None
        self.port = 0
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- connections -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername")[0])
        task = asyncio.current_task()
        granted = any(g.address == peer for g in self._grants.values())
        allowed = self.config.connections_per_address if granted else UNGRANTED_CONNECTIONS
        if task is None or len(self._tasks) >= self.config.connections or self._open.get(peer, 0) >= allowed:
            writer.close()
            return
        self._tasks.add(task)
        self._open[peer] = self._open.get(peer, 0) + 1
        try:
            await self._serve(peer, reader, writer)
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            pass
        except asyncio.CancelledError:
            # by close(): end as a task that returned (asyncio's stream callback in 3.11
            # asks a cancelled task for its exception and logs what that raises)
            pass
        finally:
            self._tasks.discard(task)
            self._open[peer] -= 1
            if not self._open[peer]:
                del self._open[peer]
            writer.close()

    async def _serve(self, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_head)
        wait = self.config.idle_timeout
        while True:
            try:
                event = await _next(conn, reader, wait)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _answer(conn, writer, exc.error_status_hint, "malformed request")
                return
            if not isinstance(event, h11.Request):
                return
            if len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers) > self.config.max_head:
                await _answer(conn, writer, 431, f"a request head is at most {self.config.max_head} bytes")
                return
            await self._call(conn, reader, writer, peer, event)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    # -- one call --------------------------------------------------------------------

    async def _call(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        request: h11.Request,
    ) -> None:
        started = time.monotonic()
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        _, token, name, rest = (path.split("/", 3) + ["", "", ""])[:4]
        rest = "/" + rest if rest or path.endswith(f"/{name}/") else ""
        held = self._by_token.get(token) or self._only_grant_at(peer)
        call: dict[str, object] = {
            "binding": name[:64],
            "method": method[:16],
            "path": rest[:MAX_PATH_RECORDED],
        }
        try:
            binding = self._authorize(held, token, peer, name)
            assert held is not None
            if held.calls >= self.config.calls_per_sandbox:
                raise _Refused(429, f"at most {self.config.calls_per_sandbox} calls at once per sandbox")
            if any(unquote(part) in (".", "..") for part in rest.split("/")):
                raise _Refused(400, "a path may not hold '.' or '..' segments")
            held.calls += 1
            try:
                async with asyncio.timeout(self.config.deadline):
                    call["status"] = await self._forward(
                        conn, reader, writer, request, binding, rest, query, call
                    )
            except TimeoutError:
                if conn.our_state is h11.SEND_BODY:
                    call["error"] = "deadline passed while streaming"
                raise _Refused(504, "the call passed its deadline") from None
            finally:
                held.calls -= 1
        except _Refused as refused:
            call["status"] = refused.status
            if conn.our_state is h11.SEND_RESPONSE:
                await _answer(conn, writer, refused.status, str(refused))
        except (ConnectionError, h11.ProtocolError) as exc:
            call.setdefault("status", 0)
            call["error"] = f"connection ended: {type(exc).__name__}"
            raise
        finally:
            if held is not None and held.address == peer and self.on_call is not None:
                call["duration_ms"] = round((time.monotonic() - started) * 1000)
                await self.on_call(held.sandbox_id, held.org_id, call)

    def _only_grant_at(self, peer: str) -> _Grant | None:
        """The grant of the one sandbox at ``peer``, to which a refused call is
        reported (none when several share it: the process runtime's loopback)."""
        found = [g for g in self._grants.values() if g.address == peer]
        return found[0] if len(found) == 1 else None

    def _authorize(self, held: _Grant | None, token: str, peer: str, name: str) -> Binding:
        if held is None or held.token != token:
            raise _Refused(404, "no such binding endpoint")
        if held.address != peer:
            raise _Refused(403, "this endpoint belongs to another sandbox")
        binding = held.bindings.get(name)
        if binding is None:
            raise _Refused(404, f"this sandbox did not open a binding named {name[:64]!r}")
        return binding

    async def _forward(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        binding: Binding,
        rest: str,
        query: str,
        call: dict[str, object],
    ) -> int:
        """Send the call upstream and its answer back; the upstream's status (and, for a
        metered binding, the answer's usage in ``call``)."""
        assert self._client is not None
        header = binding.header.lower().encode("ascii")
        headers = [(k, v) for k, v in request.headers if k not in HOP_BY_HOP and k != header]
        headers.append((binding.header.encode("ascii"), binding.secret.encode("ascii")))
        length = next((int(v) for k, v in request.headers if k == b"content-length"), None)
        if length is not None and length > self.config.max_body:
            raise _Refused(413, f"a request body is at most {self.config.max_body} bytes")
        chunked = any(k == b"transfer-encoding" for k, _ in request.headers)
        if length is None and chunked:
            headers = [(k, v) for k, v in headers if k != b"content-length"]
        body = self._body(conn, reader, writer) if chunked or length else None
        if body is None:
            await _drain(conn, reader, self.config.chunk_timeout)
        url = binding.url + rest + (f"?{query}" if query else "")
        try:
            upstream = self._client.build_request(request.method.decode(), url, headers=headers, content=body)
            response = await self._client.send(upstream, stream=True)
        except _Refused:
            raise
        except httpx.TimeoutException as exc:
            raise _Refused(504, "the upstream did not answer in time") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise _Refused(502, f"the upstream could not be reached: {type(exc).__name__}") from exc
        try:
            secret = binding.secret.encode("ascii")
            back = [
                (k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP and secret not in v
            ]
            writer.write(conn.send(h11.Response(status_code=response.status_code, headers=back)) or b"")
            usage = None
            if binding.metered:
                kind, coding = (
                    response.headers.get("content-type", ""),
                    response.headers.get("content-encoding", ""),
                )
                usage = UsageReader(kind, coding)
            async for chunk in response.aiter_raw():
                if usage is not None:
                    usage.feed(chunk)
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
            if usage is not None:
                read = usage.usage()
                call.update(
                    model=read.model, input_tokens=read.input_tokens, output_tokens=read.output_tokens
                )
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        except httpx.HTTPError as exc:  # the answer broke off: cut ours too
            raise ConnectionResetError(f"the upstream's answer broke off: {type(exc).__name__}") from exc
        finally:
            await response.aclose()
        return response.status_code

    async def _body(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> AsyncIterator[bytes]:
        if conn.client_is_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        seen = 0
        while True:
            try:
                event = await _next(conn, reader, self.config.chunk_timeout)
            except TimeoutError:
                raise _Refused(408, "the request body stalled") from None
            if isinstance(event, h11.Data):
                seen += len(event.data)
                if seen > self.config.max_body:
                    raise _Refused(413, f"a request body is at most {self.config.max_body} bytes")
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise ConnectionResetError("the request body ended early")


async def _next(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> object:
    """The connection's next event, reading as needed: whole within ``timeout`` (a
    request head sent a byte at a time gets no more time than one sent at once)."""
    async with asyncio.timeout(timeout):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(READ_SIZE))


async def _drain(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> None:
    """Read a body-less request to its end."""
    while not isinstance(await _next(conn, reader, timeout), h11.EndOfMessage | h11.ConnectionClosed):
        pass


async def _answer(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """A short JSON error of the forwarder's own."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    with contextlib.suppress(h11.LocalProtocolError):
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
