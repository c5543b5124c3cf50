"""``NodeNetwork``: the ``corral.ports.Network`` port on this node's kernel.

It composes the bridge (``bridge.py``), one namespace and veth per sandbox
(``namespace.py``), the nftables rules (``firewall.py``), the resolver
(``resolver.py``) and what it asks (``gate.py``, which also keeps the table of
attached sandboxes and their locks), the service-binding forwarder
(``forwarder.py``), the denial events (``denials.py``), the ledger (``ledger.py``)
and the pool of ready namespaces (``spares.py``); the package docstring states the
security model.

Lifecycle: :meth:`NodeNetwork.start` (idempotent; every other method calls it) makes
the bridge and the base firewall, reloads the ledger, routes again a sandbox the
firewall lost (e.g. after ``nft flush ruleset``, or after an upgrade from per-sandbox
chains), binds the forwarder (with
``forwarder_port``; its port is the one the firewall opens on the bridge address), the
resolver on ``<gateway>:53`` and the NFLOG group. :meth:`NodeNetwork.close` stops the
forwarder, the resolver and the event reader and touches nothing in the kernel:
sandboxes keep their network (without DNS or bindings) while ``corral serve``
restarts; ready namespaces stay too, and the next start takes them over from the
ledger.

Contracts (all ids are checked first: InvalidInput):

* ``attach`` -> NetInfo; all-or-nothing (each step pushes its undo on an
  AsyncExitStack); Conflict if the sandbox is attached already; LimitExceeded when
  the pool is exhausted; InvalidInput for a bad policy; RuntimeFailure otherwise.
  With a ready namespace (``ready_namespaces`` > 0) it claims one: one ``nft -f``
  transaction (its address into the verdict map, its policy's networks into the
  firewall's shared sets, the bridge's binding), a sysfs write and the ledger; a
  refill is asked for. Without one it makes the namespace itself.
* ``detach``: idempotent; RuntimeFailure if something could not be removed (the
  sandbox stays known, so a retry or ``reclaim`` finishes the job). The namespace
  is removed, never handed back to the pool.
* ``set_policy``: applies at once, to open connections too; NotFound if not attached.
* ``info``: None when not attached or its namespace is gone.
* ``reclaim(keep)``: detaches every sandbox with any trace here (ledger, namespace
  with our prefix, firewall binding) that is not in ``keep``, removes
  pool-named namespaces and host ends that are neither a ready (or pending) spare
  nor a sandbox's, and deletes bridge ports nobody owns; returns the sandbox ids
  removed, sorted. Ready spares are kept.
* ``drain``: stops refilling and removes every ready namespace (tests, uninstall).
* ``start``: Unavailable when the resolver cannot bind ``<gateway>:53`` or the
  forwarder its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from corral import ids
from corral.domain import EgressPolicy
from corral.domain.egress import validate_policy
from corral.errors import Conflict, CorralError, InvalidInput, NotFound, RuntimeFailure, Unavailable
from corral.network import bridge, namespace, recovery
from corral.network.denials import Denials
from corral.network.firewall import Firewall
from corral.network.forwarder import Forwarder, ForwarderConfig
from corral.network.gate import Attached, Gate, OrgOf
from corral.network.ledger import Ledger, Record
from corral.network.policy import Rules
from corral.network.pool import AddressPool
from corral.network.quota import QuotaLimits
from corral.network.resolver import Resolver, parse_upstream, system_upstreams
from corral.network.spares import Spares
from corral.ports import AllowedFn, BindingCallFn, DeniedFn, NetInfo

log = logging.getLogger("corral.network")


class NodeNetwork:
    """See the module docstring. Nothing happens at construction."""

    def __init__(
        self,
        state_dir: Path,
        on_denied: DeniedFn | None = None,
        *,
        pool: str = "10.213.0.0/16",
        bridge_name: str = "corral0",
        upstreams: Sequence[str] | None = None,
        table: str = "corral",
        netns_prefix: str = "corral-",
        nflog_group: int = 213,
        extra_denied: Sequence[str] = (),
        denial_rate: float = 1.0,
        denial_burst: int = 10,
        pin_private: bool = False,
        ready_namespaces: int = 4,
        ready_concurrency: int = 1,
        dns_limits: QuotaLimits | None = None,
        dns_timeout: float = 2.0,
        dns_deadline: float = 4.0,
        forwarder_port: int | None = None,
        forwarder_config: ForwarderConfig | None = None,
        on_binding_call: BindingCallFn | None = None,
        on_allowed: AllowedFn | None = None,
        org_of: OrgOf | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``forwarder_port``: the service-binding forwarder's (0: a free one; None: no
        forwarder), which reports each call to ``on_binding_call``. ``clock`` (monotonic
        seconds) times the bounds of the denial and allowed events (tests advance a fake)."""
        self._pool = AddressPool(pool)
        if not 0 <= nflog_group <= 0xFFFF:
            raise CorralError(f"NFLOG group {nflog_group} is out of range (0-65535)")
        if not 1 <= len(bridge_name) <= 15 or not bridge_name.replace("_", "").replace("-", "").isalnum():
            raise CorralError(f"bad bridge name {bridge_name!r}")
        if not table.replace("_", "").isalnum() or not netns_prefix.replace("-", "").isalnum():
            raise CorralError(f"bad table name {table!r} or namespace prefix {netns_prefix!r}")
        dns = dns_limits or QuotaLimits()
        try:
            self._upstreams = [parse_upstream(u) for u in upstreams] if upstreams is not None else None
            self._firewall = Firewall(
                table=table,
                bridge=bridge_name,
                network=self._pool.network,
                gateway=self._pool.gateway,
                group=nflog_group,
                extra_denied=extra_denied,
                dns_rate=math.ceil(2 * dns.rate),
                dns_burst=2 * dns.burst,
            )
        except ValueError as exc:
            raise CorralError(f"network settings: {exc}") from exc
        self._dns = (dns_limits, dns_timeout, dns_deadline)
        self._bridge = bridge_name
        self._prefix = netns_prefix
        self._group = nflog_group
        self._ledger = Ledger(state_dir)
        self._gate = Gate(self._firewall, self._report, pin_private=pin_private, org_of=org_of)
        self._sandboxes = self._gate.sandboxes
        self._denials = Denials(
            on_denied,
            self._gate.owner,
            self._gate.hostname_of,
            rate=denial_rate,
            burst=denial_burst,
            clock=clock,
            on_allowed=on_allowed,
        )
        self._spares = Spares(
            ready_namespaces,
            prefix=netns_prefix,
            bridge=bridge_name,
            pool=self._pool,
            firewall=self._firewall,
            ledger=self._ledger,
            taken=self._gate.addresses,
            concurrency=ready_concurrency,
        )
        self.forwarder = Forwarder(on_binding_call, forwarder_config) if forwarder_port is not None else None
        self._forwarder_port = forwarder_port or 0
        self._start_lock = asyncio.Lock()
        self._resolver: Resolver | None = None
        self._started = False

    @property
    def gateway(self) -> str:
        return str(self._pool.gateway)

    @property
    def firewall(self) -> Firewall:
        return self._firewall

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            await self._ledger.load()
            await bridge.ensure(self._bridge, self._pool.gateway, self._pool.network)
            open_ports = []
            if self.forwarder is not None:
                if not self.forwarder.port:
                    try:
                        await self.forwarder.start(self.gateway, self._forwarder_port)
                    except OSError as exc:
                        raise Unavailable(
                            f"cannot serve the binding forwarder on {self.gateway}:{self._forwarder_port}: {exc}"
                        ) from exc
                open_ports.append(self.forwarder.port)
            await self._firewall.setup(open_ports)
            await self._recover()
            upstreams = self._upstreams if self._upstreams is not None else system_upstreams()
            upstreams = [u for u in upstreams if u[0] != self.gateway]  # never ourselves
            if not upstreams:
                log.warning("no upstream DNS server: sandboxes will get SERVFAIL for every name")
            limits, timeout, deadline = self._dns
            resolver = Resolver(self._gate, upstreams, timeout=timeout, deadline=deadline, limits=limits)
            try:
                await resolver.start(self.gateway, 53)
            except OSError as exc:
                raise Unavailable(f"cannot serve DNS on {self.gateway}:53: {exc}") from exc
            self._resolver = self._gate.resolver = resolver
            await self._denials.start(self._group)
            for sandbox in self._sandboxes.values():
                self._gate.refresh_blocks(sandbox)
            self._spares.start()
            self._started = True

    async def close(self) -> None:
        await self._spares.stop()
        if self.forwarder is not None:
            await self.forwarder.close()
        self._gate.stop()
        resolver, self._resolver = self._resolver, None
        self._gate.resolver = None
        if resolver is not None:
            await resolver.close()
        await self._denials.close()
        self._started = False

    async def _recover(self) -> None:
        """Rebuild memory from the ledger; adopt sandboxes the ledger lost, with the
        address the firewall routes or, failing that, the one inside the namespace
        (their policy unknown: deny_all, fail closed); route again the ones the firewall
        does not route; take
        over the ready namespaces that are intact (``reclaim`` removes the others)."""
        ledger = self._ledger
        ledger.records = records = recovery.with_names(ledger.records, self._prefix)
        found = await self._firewall.bindings()
        adopted = await recovery.lost_sandboxes(self._prefix, records, found, self._pool.contains)
        for sid in adopted:
            log.warning("network of %s was not in the ledger; adopted with a deny_all policy", sid)
        records.update(adopted)
        held = {record.address for record in records.values()}
        ready, dropped = await recovery.intact_spares(self._prefix, ledger.spares, held, self._pool.contains)
        ready, extra = ready[: self._spares.size], ready[self._spares.size :]
        for tag in [*dropped, *(spare.tag for spare in extra)]:
            del ledger.spares[tag]
        for spare in ready:
            self._spares.adopt(spare)
        if ready:  # the firewall may have been rebuilt meanwhile
            await self._firewall.prepare([(spare.chain, spare.veth) for spare in ready])
        chains = await self._firewall.sandbox_chains()
        for sid, record in records.items():
            assert record.netns is not None and record.veth is not None and record.chain is not None
            sandbox = self._remember(
                sid, record.address, record.policy, record.netns, record.veth, record.chain
            )
            if not await asyncio.to_thread(namespace.exists, sandbox.netns):
                continue  # reclaim decides
            if sandbox.chain not in chains:
                await self._firewall.attach(sandbox.chain, sandbox.veth, sandbox.address, sandbox.rules)
            elif sid in adopted:
                await self._firewall.replace(sandbox.chain, sandbox.rules, [], [])
        await ledger.save()

    def status(self) -> dict[str, object]:
        return {
            "bridge": self._bridge,
            "gateway": self.gateway,
            "sandboxes": len(self._sandboxes),
            "ready_namespaces": len(self._spares.ready),
            "resolver": self._resolver is not None,
            "forwarder": self.forwarder.port if self.forwarder is not None else None,
            "upstreams": [f"{h}:{p}" for h, p in self._resolver.upstreams] if self._resolver else [],
            "denials_listening": self._denials.listening,
        }

    # -- the port --------------------------------------------------------------------

    async def attach(self, sandbox_id: str, policy: EgressPolicy) -> NetInfo:
        _check(sandbox_id)
        policy = validate_policy(policy)
        await self.start()
        async with self._gate.lock(sandbox_id):
            if sandbox_id in self._sandboxes:
                raise Conflict(f"sandbox {sandbox_id} already has a network")
            spare = self._spares.take()
            if spare is not None:
                address, netns, veth, chain = spare.address, spare.netns, spare.veth, spare.chain
                self._ledger.spares.pop(spare.tag, None)
            else:
                taken = self._gate.addresses() | {spare.address for spare in self._spares.known()}
                address = self._pool.allocate(taken, self._ledger.cursor)
                netns, veth, chain = self._prefix + sandbox_id, namespace.veth_name(sandbox_id), sandbox_id
            async with contextlib.AsyncExitStack() as undo:
                sandbox = self._remember(sandbox_id, address, policy, netns, veth, chain)
                undo.callback(self._gate.remove, sandbox)
                # Both undos are idempotent, so they go on the stack before their steps,
                # which run side by side (the firewall does not need the veth to exist).
                # A claimed spare that fails is removed, not returned to the pool.
                undo.push_async_callback(self._quietly, namespace.remove, netns, veth)
                undo.push_async_callback(self._quietly, self._firewall.detach, chain, veth, address)
                # The record is saved alongside (recovery checks it against the kernel).
                self._ledger.records[sandbox_id] = Record(address, policy, netns, veth, chain)
                undo.push_async_callback(self._quietly, self._ledger.save)
                undo.callback(self._ledger.records.pop, sandbox_id, None)
                firewall = self._firewall.attach(chain, veth, address, sandbox.rules, made=spare is not None)
                if spare is None:
                    self._ledger.cursor = address
                    making = namespace.create(netns, veth, self._bridge, address, self._pool.gateway)
                    await _together(making, firewall, self._ledger.save())
                else:
                    await _together(
                        asyncio.to_thread(namespace.label, veth, sandbox_id), firewall, self._ledger.save()
                    )
                undo.pop_all()
            self._spares.kick()  # after the claim: a refill's nft would queue ours behind it
            self._gate.refresh_blocks(sandbox)
            return self._info(sandbox)

    async def detach(self, sandbox_id: str) -> None:
        _check(sandbox_id)
        await self.start()
        async with self._gate.lock(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is not None:
                address: str | None = sandbox.address
                netns, veth, chain = sandbox.netns, sandbox.veth, sandbox.chain
            else:
                address = (await self._firewall.bindings()).get(sandbox_id)
                netns, veth, chain = self._prefix + sandbox_id, namespace.veth_name(sandbox_id), sandbox_id
            await _together(self._firewall.detach(chain, veth, address), namespace.remove(netns, veth))
            if sandbox is not None:
                self._gate.remove(sandbox)
            self._denials.forget(sandbox_id)
            if self._ledger.records.pop(sandbox_id, None) is not None:
                await self._ledger.save()

    async def set_policy(self, sandbox_id: str, policy: EgressPolicy) -> None:
        _check(sandbox_id)
        policy = validate_policy(policy)
        rules = Rules.compile(policy)
        await self.start()
        async with self._gate.lock(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None:
                raise NotFound(f"sandbox {sandbox_id} has no network")
            pins = sandbox.pins.keep(rules.name_allowed) if rules.pins_answers else []
            if not rules.pins_answers:
                sandbox.pins.clear()
            blocks = sandbox.blocks.keep(rules.name_denied) if rules.blocks_answers else []
            if not rules.blocks_answers:
                sandbox.blocks.clear()
            await self._firewall.replace(sandbox.chain, rules, pins, blocks)
            sandbox.policy, sandbox.rules = policy, rules
            self._ledger.records[sandbox_id] = Record(
                sandbox.address, policy, sandbox.netns, sandbox.veth, sandbox.chain
            )
            await self._ledger.save()
            self._gate.refresh_blocks(sandbox)

    async def info(self, sandbox_id: str) -> NetInfo | None:
        _check(sandbox_id)
        await self.start()
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or not await asyncio.to_thread(namespace.exists, sandbox.netns):
            return None
        return self._info(sandbox)

    async def reclaim(self, keep: set[str]) -> list[str]:
        await self.start()
        found = set(self._sandboxes) | set(await self._firewall.sandbox_chains())
        found |= set(await self._firewall.bindings())
        found |= {n[len(self._prefix) :] for n in await namespace.names(self._prefix)}
        removed = sorted(sid for sid in found if ids.is_valid(sid, "sb") and sid not in keep)
        failures = []
        for sid in removed:
            try:
                await self.detach(sid)
            except RuntimeFailure as exc:
                failures.append(exc.message)
        failures += await self._spares.sweep(self._names_in_use)
        ports = await bridge.ports(self._bridge)
        owned = {s.veth for s in self._sandboxes.values()} | {namespace.veth_name(s) for s in keep}
        owned |= {spare.veth for spare in self._spares.known()}
        for port in ports - owned:
            try:
                await namespace.remove_link(port)
            except RuntimeFailure as exc:
                failures.append(exc.message)
        if failures:
            raise RuntimeFailure("network reclaim incomplete: " + "; ".join(failures))
        return removed

    async def drain(self) -> None:
        """Stop refilling and remove every ready namespace (tests, uninstall); the
        next ``start`` after ``close`` refills. RuntimeFailure if one could not be
        removed (``reclaim`` retries)."""
        await self.start()
        await self._spares.drain()

    # -- internals -------------------------------------------------------------------

    def _remember(
        self, sid: str, address: str, policy: EgressPolicy, netns: str, veth: str, chain: str
    ) -> Attached:
        rules = Rules.compile(policy)
        sandbox = Attached(
            id=sid, address=address, veth=veth, netns=netns, policy=policy, rules=rules, chain=chain
        )
        self._gate.add(sandbox)
        return sandbox

    def _names_in_use(self) -> set[str]:
        return {name for s in self._sandboxes.values() for name in (s.netns, s.veth, s.chain)}

    def _info(self, sandbox: Attached) -> NetInfo:
        return NetInfo(
            netns_path=namespace.netns_path(sandbox.netns), address=sandbox.address, gateway=self.gateway
        )

    def _report(self, sandbox_id: str, event: dict[str, object]) -> None:
        self._denials.report(sandbox_id, event)

    async def _quietly(self, step: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await step(*args)
        except CorralError as exc:
            log.error("undo failed: %s", exc)


async def _together(*steps: Coroutine[Any, Any, None]) -> None:
    """Run ``steps`` concurrently, wait for all of them, raise the first failure."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _check(sandbox_id: str) -> None:
    if not ids.is_valid(sandbox_id, "sb"):
        raise InvalidInput(f"not a sandbox id: {sandbox_id!r}", field="sandbox_id")
