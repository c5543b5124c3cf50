"""Ready network namespaces, made ahead so that ``attach`` only has to claim one.

A *spare* is what a sandbox's attach would make, made before there is a sandbox: the
namespace ``<prefix>pool-<tag>`` (``<tag>``: 12 random hex digits) with ``lo`` up, the
sysctls set, ``eth0`` holding an address from the pool and the default route, and the
host end of its veth, ``vp<tag>``, isolated on the bridge and up. That host end is in
the bridge table's ``ports`` set (its key ``pool-<tag>`` as the element's comment) with
no address bound to it, so every frame from the spare is dropped, and no verdict-map
entry routes its address: until it is claimed, a spare reaches nothing and nothing
reaches it. A claim is one ``nft`` transaction, the same as any attach's: the address
into the verdict map (keyed ``pool-<tag>``), the policy's networks into the shared
sets, and the bridge's binding.

Network namespaces cannot be renamed, so a sandbox that claims a spare keeps the pool's
names (namespace, host end, firewall key): the ledger records them per sandbox and
``NetInfo.netns_path`` carries the path.
The claim also writes the sandbox id as the host end's interface alias
(``namespace.label``), so the owner of a pool-named namespace can be told from the
kernel alone when the ledger is lost.

A spare serves one sandbox: ``detach`` removes a sandbox's namespace whatever its name
and the pool makes a fresh one. (A namespace a sandbox ran in may still hold conntrack
entries, sockets of processes not yet reaped, neighbour entries; proving it clean
costs more than making a new one in the background.)

:class:`Spares` keeps up to ``size`` of them. Contracts:

* :meth:`Spares.take` returns the oldest ready spare at once, or None when there is none
  (the caller then makes a namespace itself); the caller owns it from then on.
* :meth:`Spares.kick` asks for a refill and returns at once; ``concurrency`` worker
  tasks refill in the background (never in the caller's task), each making one spare at
  a time, all-or-nothing (a half-made one is removed), each step after the sandbox
  creates in progress (``corral.priority``, at most ``YIELD_S`` later). A failure is
  logged and retried after a back-off (1 s, doubling, at most 60 s).
* :meth:`Spares.sweep` removes pool-named leftovers nobody owns; :meth:`Spares.drain`
  removes the ready ones.
* ``ready`` and ``pending`` (being made) are the spares this process knows; their
  kernel objects must not be taken for leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from corral import priority
from corral.errors import CorralError, RuntimeFailure
from corral.network import bridge, command, namespace
from corral.network.firewall import Firewall
from corral.network.ledger import Ledger
from corral.network.pool import AddressPool

log = logging.getLogger("corral.network")

POOL_INFIX = "pool-"
VETH_PREFIX = "vp"
MAX_BACKOFF_S = 60.0
YIELD_S = 1.0  # longest a refill step waits for creates in progress (``corral.priority``)
_TAG = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class Spare:
    tag: str
    address: str
    netns: str
    veth: str

    @property
    def chain(self) -> str:
        return chain(self.tag)


def names(prefix: str, tag: str) -> tuple[str, str]:
    """(namespace, host end) of the spare ``tag``."""
    return f"{prefix}{POOL_INFIX}{tag}", f"{VETH_PREFIX}{tag}"


def chain(tag: str) -> str:
    """The firewall key of the spare ``tag`` (its chain's name in earlier versions)."""
    return f"{POOL_INFIX}{tag}"


def tag_of_chain(name: str) -> str | None:
    tag = name[len(POOL_INFIX) :] if name.startswith(POOL_INFIX) else ""
    return tag if _TAG.fullmatch(tag) else None


def tag_of_netns(prefix: str, name: str) -> str | None:
    """The tag of a pool-named namespace, None for any other name."""
    head = prefix + POOL_INFIX
    tag = name[len(head) :] if name.startswith(head) else ""
    return tag if _TAG.fullmatch(tag) else None


def tag_of_veth(name: str) -> str | None:
    """The tag of a pool-named host end, None for any other name."""
    tag = name[len(VETH_PREFIX) :] if name.startswith(VETH_PREFIX) else ""
    return tag if _TAG.fullmatch(tag) else None


class Spares:
    """The ready namespaces of one node; see the module docstring. ``taken()`` gives
    the addresses sandboxes hold; the ledger is the node's (this class adds and removes
    its ``spares`` entries and saves it)."""

    def __init__(
        self,
        size: int,
        *,
        prefix: str,
        bridge: str,
        pool: AddressPool,
        firewall: Firewall,
        ledger: Ledger,
        taken: Callable[[], set[str]],
        concurrency: int = 1,
    ) -> None:
        if size < 0 or concurrency < 1:
            raise CorralError(f"bad namespace pool: size {size}, concurrency {concurrency}")
        self.size = size
        self.concurrency = concurrency
        self.ready: dict[str, Spare] = {}  # insertion order: the oldest is taken first
        self.pending: dict[str, Spare] = {}
        self._prefix = prefix
        self._bridge = bridge
        self._pool = pool
        self._firewall = firewall
        self._ledger = ledger
        self._taken = taken
        self._wanted = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False

    def known(self) -> list[Spare]:
        """Ready and pending spares."""
        return [*self.ready.values(), *self.pending.values()]

    def adopt(self, spare: Spare) -> None:
        """Count a spare found intact at start-up as ready."""
        self.ready[spare.tag] = spare

    def take(self) -> Spare | None:
        """The oldest ready spare, None when there is none. The caller removes it from
        the ledger's ``spares`` when it records its claim."""
        if not self.ready:
            return None
        return self.ready.pop(next(iter(self.ready)))

    def kick(self) -> None:
        self._wanted.set()

    def start(self) -> None:
        """Start the workers (idempotent; nothing with ``size`` 0) and a first refill."""
        if self.size and not self._workers:
            self._stopping = False
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._work(), name=f"corral-netns-pool-{n}") for n in range(self.concurrency)
            ]
        self.kick()

    async def stop(self) -> None:
        """Stop the workers; a spare being made is removed (its build unwinds) or
        finished. (The flag ends a worker whose cancellation was lost: Python 3.11's
        ``wait_for`` swallows a cancel that lands as its inner call completes.)"""
        workers, self._workers = self._workers, []
        self._stopping = True
        self.kick()
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain(self) -> None:
        """Stop the workers and remove every ready spare. RuntimeFailure if one could
        not be removed (it stays in the ledger, so a later sweep retries)."""
        await self.stop()
        failures = []
        while (spare := self.take()) is not None:
            try:
                await self.remove(spare.tag)
            except RuntimeFailure as exc:
                failures.append(exc.message)
                continue
            self._ledger.spares.pop(spare.tag, None)
        await self._ledger.save()
        if failures:
            raise RuntimeFailure("removing ready namespaces: " + "; ".join(failures))

    async def sweep(self, in_use: Callable[[], set[str]]) -> list[str]:
        """Remove pool-named namespaces and host ends that are neither a spare this
        process knows (ready or being made) nor in ``in_use()`` (the names sandboxes
        hold): left by a crash or a failed removal. Returns the failures' messages."""
        found = {tag_of_netns(self._prefix, name) for name in await namespace.names(self._prefix)}
        found |= {tag_of_veth(port) for port in await bridge.ports(self._bridge)}
        found |= {tag_of_chain(name) for name in await self._firewall.sandbox_chains()}
        found |= {tag_of_chain(name) for name in await self._firewall.prepared()}
        bound = await self._firewall.bindings()
        # Decided after the listing: a spare begun meanwhile is pending by now, and one
        # taken meanwhile is its sandbox's.
        live = {spare.tag for spare in self.known()}
        used = in_use()
        failures = []
        for tag in sorted(tag for tag in found if tag is not None and tag not in live):
            netns, veth = names(self._prefix, tag)
            if netns in used or veth in used or chain(tag) in used:
                continue
            log.warning("removing the leftover ready namespace %s", netns)
            try:
                await self.remove(tag, bound.get(chain(tag)))
            except RuntimeFailure as exc:
                failures.append(exc.message)
        return failures

    async def remove(self, tag: str, address: str | None = None) -> None:
        """Delete a pool-named namespace, its veth and its firewall elements and port
        (and the binding of ``address`` to its key, if any); idempotent."""
        netns, veth = names(self._prefix, tag)
        await namespace.remove(netns, veth)
        await self._firewall.detach(chain(tag), veth, address)

    async def _build(self, spare: Spare) -> None:
        """Make ``spare``'s kernel objects and record it; all-or-nothing. The host end is
        reserved in the bridge table before it exists, so it never sends a frame."""
        try:
            await priority.quiet(YIELD_S)  # a create in progress goes first
            await self._firewall.prepare([(spare.chain, spare.veth)])
            await priority.quiet(YIELD_S)
            await namespace.create(spare.netns, spare.veth, self._bridge, spare.address, self._pool.gateway)
            self._ledger.spares[spare.tag] = spare.address
            self._ledger.cursor = spare.address
            await self._ledger.save()
        except BaseException:
            self._ledger.spares.pop(spare.tag, None)
            try:
                await asyncio.shield(self.remove(spare.tag))
            except CorralError as exc:
                log.error("removing a half-made ready namespace: %s", exc)
            raise

    async def _work(self) -> None:
        with command.in_background():
            await self._refill()

    async def _refill(self) -> None:
        delay = 0.0
        while not self._stopping:
            self._wanted.clear()
            while not self._stopping and len(self.ready) + len(self.pending) < self.size:
                try:
                    netns, veth = names(self._prefix, tag := secrets.token_hex(6))
                    taken = self._taken() | {spare.address for spare in self.known()}
                    spare = Spare(tag, self._pool.allocate(taken, self._ledger.cursor), netns, veth)
                except CorralError as exc:
                    delay = _backoff(delay)
                    log.warning("no ready network namespace (retry in %.0f s): %s", delay, exc)
                    break
                self.pending[spare.tag] = spare
                try:
                    await self._build(spare)
                except Exception as exc:  # noqa: BLE001 - logged; the pool retries
                    delay = _backoff(delay)
                    log.error("making a ready network namespace failed (retry in %.0f s): %s", delay, exc)
                    break
                else:
                    self.ready[spare.tag] = spare
                    delay = 0.0
                finally:
                    self.pending.pop(spare.tag, None)
            if self._stopping:
                return
            if delay:
                await asyncio.sleep(delay)
                continue
            await self._wanted.wait()


def _backoff(delay: float) -> float:
    return min(MAX_BACKOFF_S, max(1.0, delay * 2))
