"""The node's answer to the resolver (the :class:`~corral.network.resolver.Gate`):
which sandbox a client address is, whether its policy allows a name, and what an
answer opens (resolve-and-pin) or closes (blocked addresses of denied names).

It also holds the table of attached sandboxes (:class:`Attached`, by id and by
address) and their locks: one ``asyncio.Lock`` per sandbox serialises attach,
detach, policy changes and pin writes, so a pin computed under an old policy is
never written after the new one (the policy is re-checked under the lock).

Blocking under allow_all: when a sandbox asks for a denied name, the gate looks the
name up itself and puts its addresses in the sandbox's block set; for exact denied
names a background task per sandbox keeps doing so as the TTLs run out, so a
hardcoded address of a denied name is closed too (as far as it resolves the same
way for us). Answers whose CNAME chain passes through a denied name are refused.

Orgs: the resolver bounds DNS per org (``quota.py``), and asks :meth:`Gate.org`. The
gate learns a sandbox's org from ``org_of`` (set by the services: the store knows it)
on the sandbox's first query, one lookup at a time per sandbox, and keeps it; a
sandbox without an org yet (a standby one not yet claimed) is asked about again after
``ORG_RETRY_S``, and counts as its own org meanwhile.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from corral.domain import EgressPolicy
from corral.domain.egress import hostname
from corral.errors import RuntimeFailure
from corral.network.firewall import Firewall
from corral.network.message import CNAME, A, Answer
from corral.network.pins import PinBoard
from corral.network.policy import Rules
from corral.network.resolver import Resolver, Verdict

log = logging.getLogger("corral.network")

Report = Callable[[str, dict[str, object]], None]
OrgOf = Callable[[str], Awaitable[str | None]]  # a sandbox id -> its org (None: none yet)
ORG_RETRY_S = 2.0  # a sandbox whose org was not known is asked about again after this
ORG_LOOKUP_TIMEOUT_S = 5.0


@dataclass
class Attached:
    """One attached sandbox as the node knows it."""

    id: str
    address: str
    veth: str
    netns: str
    policy: EgressPolicy
    rules: Rules
    pins: PinBoard = field(default_factory=PinBoard)
    blocks: PinBoard = field(default_factory=PinBoard)
    refresher: asyncio.Task[None] | None = None
    chain: str = ""  # its firewall chain; "" for the one named after its id
    org: str | None = None  # learnt from Gate.org_of on its first query
    org_lookup: asyncio.Task[str | None] | None = None
    org_asked: float = 0.0  # monotonic time of the last lookup

    def __post_init__(self) -> None:
        self.chain = self.chain or self.id


class Gate:
    def __init__(
        self, firewall: Firewall, report: Report, *, pin_private: bool = False, org_of: OrgOf | None = None
    ) -> None:
        self._firewall = firewall
        self._report = report
        self._pin_private = pin_private
        self.sandboxes: dict[str, Attached] = {}
        self._by_address: dict[str, str] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.resolver: Resolver | None = None
        self.org_of = org_of  # how the resolver learns a sandbox's org (its DNS bounds per org)

    # -- the table -------------------------------------------------------------------

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        return lock

    def add(self, sandbox: Attached) -> None:
        self.sandboxes[sandbox.id] = sandbox
        self._by_address[sandbox.address] = sandbox.id

    def remove(self, sandbox: Attached) -> None:
        if self.sandboxes.get(sandbox.id) is sandbox:
            self._stop_refresher(sandbox)
            del self.sandboxes[sandbox.id]
            self._by_address.pop(sandbox.address, None)

    def addresses(self) -> set[str]:
        return set(self._by_address)

    def owner(self, address: str) -> str | None:
        """The id of the sandbox with this address."""
        return self._by_address.get(address)

    def hostname_of(self, sandbox_id: str, address: str) -> str | None:
        """The name this sandbox resolved to ``address`` through us, if any."""
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return None
        return sandbox.pins.name_of(address) or sandbox.blocks.name_of(address)

    def stop(self) -> None:
        """Cancel every background task (the node is closing)."""
        for sandbox in self.sandboxes.values():
            self._stop_refresher(sandbox)
        for task in list(self._tasks):
            task.cancel()

    def _client(self, address: str) -> Attached | None:
        sid = self._by_address.get(address)
        return self.sandboxes.get(sid) if sid is not None else None

    def _current(self, sandbox: Attached) -> bool:
        return self.sandboxes.get(sandbox.id) is sandbox

    # -- the resolver's questions ------------------------------------------------------

    def verdict(self, client: str, name: str) -> Verdict:
        sandbox = self._client(client)
        if sandbox is None:
            return Verdict.UNKNOWN
        return Verdict.ALLOW if sandbox.rules.name_allowed(name) else Verdict.DENY

    async def answered(self, client: str, name: str, answer: Answer) -> bool:
        sandbox = self._client(client)
        if sandbox is None:
            return False
        rules = sandbox.rules
        names = {name} | {r.name for r in answer.records}
        names |= {r.value for r in answer.records if r.rtype == CNAME}
        addresses = [(r.value, r.ttl) for r in answer.records if r.rtype == A]
        denied = sorted(n for n in names if rules.name_denied(n))
        if denied:
            self.refused(client, denied[0])
            if rules.blocks_answers and addresses:
                await self._block(sandbox, denied[0], addresses)
            return False
        sandbox.pins.record(name, addresses)
        if not rules.pins_answers or not addresses:
            return True
        async with self.lock(sandbox.id):
            if not self._current(sandbox) or not sandbox.rules.name_allowed(name):
                return False  # detached, or the policy changed while we asked upstream
            if not sandbox.rules.pins_answers:
                return True
            due = sandbox.pins.due([a for a in addresses if self._pinnable(a[0])])
            try:
                await self._firewall.pin(sandbox.chain, "pin", due)
            except RuntimeFailure as exc:
                log.error("cannot pin %s for %s: %s", name, sandbox.id, exc)
                sandbox.pins.clear()
                return False
        return True

    def refused(self, client: str, name: str) -> None:
        sandbox = self._client(client)
        if sandbox is None:
            return
        self._report(sandbox.id, {"dst": None, "port": None, "proto": "dns", "host": name, "reason": "dns"})
        if sandbox.rules.blocks_answers and hostname(name) == name:
            self._background(self._block_name(sandbox, name, for_client=True))

    async def org(self, client: str) -> str | None:
        sandbox = self._client(client)
        if sandbox is None:
            return None
        if sandbox.org is not None or self.org_of is None:
            return sandbox.org
        task = sandbox.org_lookup
        if task is None or (task.done() and time.monotonic() - sandbox.org_asked >= ORG_RETRY_S):
            sandbox.org_asked = time.monotonic()
            task = sandbox.org_lookup = asyncio.get_running_loop().create_task(self._find_org(sandbox))
        return await asyncio.shield(task)

    async def _find_org(self, sandbox: Attached) -> str | None:
        assert self.org_of is not None
        try:
            sandbox.org = await asyncio.wait_for(self.org_of(sandbox.id), ORG_LOOKUP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 -- a store failure must not fail the query
            log.warning("cannot learn the org of %s: %s", sandbox.id, exc)
        return sandbox.org

    def _pinnable(self, address: str) -> bool:
        """DNS-rebinding protection: only globally routable answers are pinned (a
        private address opens only through a CIDR allow entry), unless configured."""
        return self._pin_private or ipaddress.IPv4Address(address).is_global

    # -- blocking denied names under allow_all ---------------------------------------

    def refresh_blocks(self, sandbox: Attached) -> None:
        """(Re)start the background task that keeps the addresses of the sandbox's
        exact denied names blocked; call after every policy change."""
        self._stop_refresher(sandbox)
        rules = sandbox.rules
        if not rules.blocks_answers or not rules.deny_names:
            return

        async def refresh() -> None:
            while True:
                ttls = [0]
                try:
                    ttls = [await self._block_name(sandbox, name) for name in sorted(rules.deny_names)]
                except Exception:
                    log.exception("refreshing blocked names of %s", sandbox.id)
                await asyncio.sleep(min(max(min(ttls), 60), 3600))

        sandbox.refresher = asyncio.get_running_loop().create_task(
            refresh(), name=f"corral-block-{sandbox.id}"
        )

    def _stop_refresher(self, sandbox: Attached) -> None:
        if sandbox.refresher is not None:
            sandbox.refresher.cancel()
            sandbox.refresher = None

    async def _block_name(self, sandbox: Attached, name: str, *, for_client: bool = False) -> int:
        """Resolve a denied name ourselves and close its addresses; returns the
        smallest TTL seen (0 when nothing was found). ``for_client``: because the
        sandbox asked for it, so the lookup counts as its org's."""
        if self.resolver is None:
            return 0
        addresses = await self.resolver.lookup(name, client=sandbox.address if for_client else None)
        if addresses:
            await self._block(sandbox, name, addresses)
        return min((ttl for _, ttl in addresses), default=0)

    async def _block(self, sandbox: Attached, name: str, addresses: list[tuple[str, int]]) -> None:
        async with self.lock(sandbox.id):
            if not self._current(sandbox) or not sandbox.rules.blocks_answers:
                return
            sandbox.blocks.record(name, addresses)
            try:
                await self._firewall.pin(sandbox.chain, "block", sandbox.blocks.due(addresses))
            except RuntimeFailure as exc:
                log.error("cannot block %s for %s: %s", name, sandbox.id, exc)
                sandbox.blocks.clear()

    def _background(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
