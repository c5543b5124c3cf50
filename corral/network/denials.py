"""Denied connection attempts as events: ``on_denied(sandbox_id, event)``; and, for a
sandbox whose policy has ``audit_allowed``, the new connections its rules let through:
``on_allowed(sandbox_id, event)``.

Two sources feed it: the kernel (packets the firewall rejected, read from NFLOG, see
``nflog.py``; the source address names the sandbox, since the bridge table makes it
unspoofable) and the resolver (names the policy does not allow). An event is::

    {"dst": "198.18.0.6", "port": 80, "proto": "tcp", "host": "other.test",
     "reason": "policy"}

``dst``/``port`` are None for a refused DNS name (``proto`` is ``"dns"`` then);
``host`` is the name the sandbox resolved to ``dst`` through our resolver, if any;
an allowed connection's event has ``dst``, ``port``, ``proto`` and ``host`` (the
kernel's NFLOG, prefix ``allowed``: the firewall's ``allowed`` chain logs it);
``reason`` is ``policy`` (the sandbox's egress policy), ``host`` (an address of the
host), ``reserved`` (another sandbox, link-local, loopback, multicast, or an
operator-denied network) or ``dns``. When this module dropped events by its rate
limit since the last one delivered, the next one carries ``"suppressed": n`` (a lower
bound: the kernel's own limit drops silently).

Rate limits, so that a flood of packets cannot flood the store: the kernel logs at
most 20 attempts (and, apart, 20 allowed connections) per second per source address,
burst 50 (and only the first packet of each), and this module delivers at most
``burst`` (10) events per sandbox at once and ``rate`` (1) per second on average, for
denials and allowed connections each (their own buckets: a sandbox's allowed traffic
never crowds out its denials), through a bounded queue (overflow is dropped and
counted in :attr:`Denials.dropped`). The callback runs in one task,
one event at a time; its exceptions are logged, never raised into the network code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.network.firewall import ALLOWED
from corral.network.nflog import Logged, NflogSocket
from corral.ports import AllowedFn, DeniedFn

log = logging.getLogger("corral.network")

Event = dict[str, object]
DENIED = "denied"


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


class Denials:
    """The event pipeline of one node. ``owner`` maps a source address to a sandbox
    id (None: not a sandbox of ours); ``hostname`` maps (sandbox id, address) to the
    name that sandbox resolved to it, if known. ``clock`` (monotonic seconds) times the
    rate limit."""

    def __init__(
        self,
        on_denied: DeniedFn | None,
        owner: Callable[[str], str | None],
        hostname: Callable[[str, str], str | None],
        *,
        rate: float = 1.0,
        burst: int = 10,
        queue_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        on_allowed: AllowedFn | None = None,
    ) -> None:
        self.on_denied = on_denied
        self.on_allowed = on_allowed
        self._owner = owner
        self._hostname = hostname
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}  # (DENIED or ALLOWED, sandbox id)
        self._queue: asyncio.Queue[tuple[str, str, Event]] = asyncio.Queue(queue_size)
        self._socket: NflogSocket | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def listening(self) -> bool:
        """Whether kernel denials are being read."""
        return self._socket is not None

    async def start(self, group: int | None) -> None:
        """Bind the NFLOG group (None: do not read the kernel's) and start delivering.
        If the group cannot be bound the failure is logged and only resolver denials
        are reported."""
        if self._task is None:
            self._task = asyncio.create_task(self._deliver(), name="corral-denials")
        if self._socket is not None or group is None:
            return
        sock = NflogSocket(group)
        try:
            await asyncio.to_thread(sock.open)
        except OSError as exc:
            log.error("denied connections will not be reported: cannot read NFLOG group %d: %s", group, exc)
            return
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    async def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            await asyncio.to_thread(sock.close)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def forget(self, sandbox_id: str) -> None:
        for kind in (DENIED, ALLOWED):
            self._buckets.pop((kind, sandbox_id), None)

    def report(self, sandbox_id: str, event: Event, kind: str = DENIED) -> None:
        """Queue one event (``kind``: DENIED or ALLOWED) for ``sandbox_id`` unless its
        rate limit for that kind says no."""
        now = self._clock()
        bucket = self._buckets.get((kind, sandbox_id))
        if bucket is None:
            bucket = self._buckets[(kind, sandbox_id)] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            bucket.suppressed += 1
            return
        bucket.tokens -= 1.0
        if bucket.suppressed:
            event = {**event, "suppressed": bucket.suppressed}
            bucket.suppressed = 0
        try:
            self._queue.put_nowait((kind, sandbox_id, event))
        except asyncio.QueueFull:
            self.dropped += 1

    def _readable(self) -> None:
        sock = self._socket
        if sock is None:
            return
        try:
            packets = sock.read()
        except OSError as exc:
            log.error("NFLOG read failed, denied connections are no longer reported: %s", exc)
            asyncio.get_running_loop().remove_reader(sock.fileno())
            self._socket = None
            sock.close()
            return
        for packet in packets:
            self._kernel(packet)

    def _kernel(self, packet: Logged) -> None:
        sandbox_id = self._owner(packet.src)
        if sandbox_id is None:
            return
        if packet.prefix == ALLOWED:
            destination = {"dst": packet.dst, "port": packet.port, "proto": packet.proto}
            self.report(sandbox_id, {**destination, "host": self._hostname(sandbox_id, packet.dst)}, ALLOWED)
            return
        self.report(
            sandbox_id,
            {
                "dst": packet.dst,
                "port": packet.port,
                "proto": packet.proto,
                "host": self._hostname(sandbox_id, packet.dst),
                "reason": packet.prefix or "policy",
            },
        )

    async def delivered(self) -> None:
        """Returns once every event queued so far has been handed to ``on_denied`` or
        ``on_allowed`` (started: see ``start``)."""
        await self._queue.join()

    async def _deliver(self) -> None:
        while True:
            kind, sandbox_id, event = await self._queue.get()
            callback = self.on_allowed if kind == ALLOWED else self.on_denied
            try:
                if callback is not None:
                    await callback(sandbox_id, event)
            except Exception:
                log.exception("on_%s failed for %s", kind, sandbox_id)
            finally:
                self._queue.task_done()
