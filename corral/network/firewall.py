"""nftables rules of the node and of each sandbox (one transaction per operation, so
every change is atomic: in this process through libnftables, ``nftlib.py``, or one
``nft -f -`` process where the library is missing).

Two tables, both named after the ``table`` setting (default ``corral``) and owned by
corral alone (nothing else is touched; other tables keep working):

``table bridge corral`` (layer 2, before anything else): frames entering the bridge
from a sandbox's port must carry that sandbox's IPv4 source address (IPv4 or ARP);
everything else from a sandbox port, IPv6 included, is dropped. No sandbox can spoof
another's address, so the source address identifies the sandbox below.

``table inet corral`` has a fixed set of chains and sets, whatever the number of
sandboxes: a sandbox is only *elements* in them, keyed by its source address, so an
attach or a detach adds or deletes elements and costs the same with 0 or 1,000 other
sandboxes (libnftables reads the table's chains and sets into its cache before each
transaction, and the kernel finds a set by name in a list: both are now a handful).

* ``input`` (traffic from sandboxes to any address of the host): only DNS to the
  bridge address (udp and tcp 53, the resolver), the service-binding forwarder's TCP
  port on the bridge address (``setup``'s ``open_ports``; it serves only sandboxes
  granted a binding: ``forwarder.py``) and replies to connections the host opened
  (the gateway proxying into a sandbox) pass; the rest goes to ``deny_host``.
  So the host, the control plane's port and every other local address are closed
  whatever the policy. Broadcast and multicast are dropped silently. UDP to the
  resolver is bounded per source address (``dns_rate`` packets a second, ``dns_burst``
  at once; a dynamic set of token buckets, ``dnsrate``): beyond it the kernel drops
  the packets, so a flooding sandbox costs the resolver's socket and event loop no
  more than that (the node sets twice the resolver's own rate, ``quota.py``, which
  answers REFUSED in between).
* ``forward``: IPv6 from or to the bridge is dropped; a connection from a sandbox
  that the host's own NAT redirected (``ct status dnat``: a port that a container
  engine or Kubernetes publishes on a host address) goes to ``deny_host``, since it
  was addressed to the host; sandbox to sandbox (back out of the bridge) and
  destinations in the ``reserved`` set (``0/8``, ``127/8``, link-local
  ``169.254/16``, multicast and class E, the whole pool, plus the operator's
  ``extra_denied``) go to ``deny_reserved``; then the source address picks the
  sandbox's mode chain through the ``sandboxes`` verdict map (each element carries
  the sandbox's key, its id or the ready namespace's ``pool-<tag>`` it claimed, as
  its comment); an address not in the map (a ready namespace not yet claimed) is
  dropped. Nobody but the host opens connections *into* a sandbox (only
  established/related pass outward-in).
* four mode chains, ``allow_all``, ``deny_all`` and their ``_audit`` twins (the
  policy's ``audit_allowed``: their accepts go to ``allowed``). Every set below is
  shared by all sandboxes and keyed by the source address: ``block`` and ``pin`` (the
  resolver's pins, ``flags timeout``) by ``ip saddr . ip daddr``; the policy's
  networks of prefix length ``n`` by ``ip saddr . ip daddr & <mask n>`` in
  ``deny<n>`` and ``allow<n>`` (33 plain hash sets each, one rule each in the chains
  ``deny_nets``, ``allow_nets`` and ``allow_nets_audit``, jumped to only for the
  addresses in ``denies`` and ``allows``, those with any such network: a sandbox
  without networks costs no lookup). Not one set of concatenated ranges: the kernel's
  deletion from one costs O(its elements) (17 ms each with 4,000), a hash set's does
  not. First the policy's deny networks and ``block`` go to ``deny_policy`` (deny
  wins); then ``allow_all`` accepts; ``deny_all`` accepts the allow networks, ``pin``
  (resolve-and-pin), and established flows in ``live`` (pinned addresses still in
  use), the rest goes to ``deny_policy``. Rules are evaluated for every packet, not only for new
  connections, so a policy change cuts flows it no longer allows at once (TCP gets
  a reset): no conntrack flush is needed. Traffic to a pinned address keeps it in
  ``live`` until 30 min after its last packet, so a long download outlives the DNS
  answer that opened it; a new connection still needs an unexpired pin. ``live``
  holds at most ``LIVE_SIZE`` (source, destination) pairs for the whole node (262144;
  kernel memory, measured: ~2 KiB empty, ~96 bytes a pair, so ~25 MiB full; the
  4096-sized set per sandbox of earlier versions cost 128 KiB each up front, 125 MiB
  at 1,000 idle sandboxes); when it is full, traffic to a pinned address still passes
  (its update is a rule of its own), only its outliving the pin is lost.
* ``postrouting``: masquerade traffic from the pool leaving through any other
  interface.
* ``deny_host``, ``deny_reserved``, ``deny_policy``: log the first packet of each
  attempt to NFLOG group ``group`` with the chain's reason as prefix, at most 20 per
  second per source address (a dynamic set of token buckets), then reject (TCP reset,
  ICMP administratively prohibited otherwise) so that clients fail fast.
* ``allowed``: the audit mode chains' accepts go here: the first packet of each new
  connection is logged to the same group with the prefix ``allowed``, at most 20 per
  second per source address (its own buckets, ``allowlog``), then accepted. Other
  sandboxes accept directly and log nothing.

What the firewall wrote for each source address (its map element and networks, and
every destination it pinned or blocked: ``live`` only ever holds pinned ones) is
kept in memory, read back from the kernel by :meth:`Firewall.setup`, so a detach
deletes exactly the sandbox's own elements: its cost grows with that sandbox's own
pins, not with the number of sandboxes. Each deletion is preceded by an ``add`` of
the same element in the same transaction, so it succeeds whether the element is
there or not (one that expired meanwhile, a table deleted under us).

A ready namespace (``spares.py``) needs no firewall object but its host end in the
bridge table's ``ports`` set (:meth:`Firewall.prepare`, its key as the element's
comment): with no address bound to it every frame from it is dropped. Its claim is
the sandbox's attach, one transaction like any other.

Idempotency and upgrades: :meth:`Firewall.setup` may run at every start (it rewrites
only the base chains; the elements survive; the ``deny`` and ``allow`` sets of
concatenated ranges of an earlier shared layout become ``deny<n>`` and ``allow<n>``
elements in the same transaction). When it finds the per-sandbox chains
and sets of earlier versions (a chain and ``<key>-pin``, ``-block``, ``-live`` sets
per sandbox), it moves their pins, blocks and live flows into the shared sets, with
the time they had left, and deletes the old objects: until the node re-attaches the
sandbox from its ledger (``node.py``, right after) its packets are dropped, not
rejected, so its connections survive. :meth:`Firewall.detach` succeeds when the
elements are already gone.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral import ids
from corral.domain import EgressMode
from corral.errors import RuntimeFailure
from corral.network import command, nftlib
from corral.network.policy import Rules

RESERVED = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
REASONS = ("host", "reserved", "policy")
ALLOWED = "allowed"  # the chain and NFLOG prefix of logged accepts (``audit_allowed``)
LIVE_TIMEOUT = "30m"
LIVE_SIZE = 262144  # (source, destination) pairs kept in use beyond their pins, node-wide
LOG_RATE = "limit rate 20/second burst 50 packets"
MODES = ("allow_all", "allow_all_audit", "deny_all", "deny_all_audit")
LENGTHS = range(33)  # prefix lengths: a policy's networks are elements of deny<n> / allow<n>
NET_KINDS = ("deny", "allow")
GUARDS = {"deny": "denies", "allow": "allows"}  # the addresses with any such network
OLD_KINDS = ("pin", "block", "live")  # per-sandbox sets of earlier versions

Pins = Sequence[tuple[str, int]]  # (address, timeout in seconds)
POOL_CHAIN = re.compile(r"pool-[0-9a-f]{12}")


def is_chain(name: str) -> bool:
    """Whether ``name`` is a sandbox's key: a sandbox id, or a ready namespace's
    ``pool-<tag>`` (the name of its chain in earlier versions)."""
    return ids.is_valid(name, "sb") or POOL_CHAIN.fullmatch(name) is not None


def mode_chain(rules: Rules) -> str:
    """The mode chain the sandboxes with ``rules`` go to."""
    mode = "allow_all" if rules.mode is EgressMode.ALLOW_ALL else "deny_all"
    return f"{mode}_audit" if rules.audit_allowed else mode


@dataclass
class _Source:
    """What the firewall wrote for one source address."""

    key: str | None = None  # the sandbox's key (map element's comment)
    verdict: str | None = None  # its mode chain in the ``sandboxes`` map, None: not routed
    deny: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    pinned: set[str] = field(default_factory=set)  # destinations in ``pin`` (and ``live``)
    blocked: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return not (self.key or self.verdict or self.deny or self.allow or self.pinned or self.blocked)


class Firewall:
    def __init__(
        self,
        *,
        table: str,
        bridge: str,
        network: ipaddress.IPv4Network,
        gateway: ipaddress.IPv4Address,
        group: int,
        extra_denied: Sequence[str] = (),
        dns_rate: int = 200,
        dns_burst: int = 400,
    ) -> None:
        if dns_rate < 1 or dns_burst < 1:
            raise ValueError(f"the DNS packet rate and burst must be positive, not {dns_rate}, {dns_burst}")
        self.dns_rate, self.dns_burst = dns_rate, dns_burst
        self.table = table
        self.bridge = bridge
        self.network = network
        self.gateway = gateway
        self.group = group
        self.reserved = _collapse([*RESERVED, str(network), *extra_denied])
        self.updates_timeouts = False  # learnt by setup()
        self._sources: dict[str, _Source] = {}  # source address -> what is written for it
        self._keys: dict[str, str] = {}  # key -> source address
        self._prepared: dict[str, str] = {}  # key -> host end, of ready namespaces

    async def _apply(self, script: Iterable[str]) -> None:
        text = "\n".join(script) + "\n"
        if nftlib.available():
            await nftlib.apply(text)
        else:
            await command.run(["nft", "-f", "-"], stdin=text)

    # -- the node --------------------------------------------------------------------

    async def setup(self, open_ports: Sequence[int] = ()) -> None:
        """Create or rewrite the base tables, chains and sets; ``open_ports``: TCP ports
        of the bridge address sandboxes may reach (the binding forwarder's). Then move
        an earlier version's per-sandbox objects into the shared sets, and read back
        what is written for each sandbox."""
        t, br = f"inet {self.table}", f'"{self.bridge}"'
        base = {
            "input": "type filter hook input priority filter - 10; policy accept;",
            "forward": "type filter hook forward priority filter - 10; policy accept;",
            "postrouting": "type nat hook postrouting priority srcnat + 10; policy accept;",
        }
        pair = "type ipv4_addr . ipv4_addr;"
        script = [
            f"add table {t}",
            f"add set {t} reserved {{ type ipv4_addr; flags interval; auto-merge; }}",
            f"add set {t} denylog {{ type ipv4_addr; flags dynamic,timeout; timeout 1m; size 65536; }}",
            f"add set {t} allowlog {{ type ipv4_addr; flags dynamic,timeout; timeout 1m; size 65536; }}",
            f"add set {t} dnsrate {{ type ipv4_addr; flags dynamic,timeout; timeout 1m; size 65536; }}",
            f"add map {t} sandboxes {{ type ipv4_addr : verdict; }}",
            *(f"add set {t} {kind}{n} {{ {pair} }}" for kind in NET_KINDS for n in LENGTHS),
            f"add set {t} denies {{ type ipv4_addr; }}",
            f"add set {t} allows {{ type ipv4_addr; }}",
            f"add set {t} block {{ {pair} flags timeout; }}",
            f"add set {t} pin {{ {pair} flags timeout; }}",
            f"add set {t} live {{ {pair} flags dynamic,timeout; size {LIVE_SIZE}; }}",
            f"flush set {t} reserved",
            f"add element {t} reserved {{ {', '.join(self.reserved)} }}",
        ]
        for name, spec in base.items():
            script += [f"add chain {t} {name} {{ {spec} }}", f"flush chain {t} {name}"]
        for reason in REASONS:
            script += [
                f"add chain {t} deny_{reason}",
                f"flush chain {t} deny_{reason}",
                (
                    f"add rule {t} deny_{reason} ct state new add @denylog {{ ip saddr {LOG_RATE} }}"
                    f' log prefix "{reason}" group {self.group} snaplen 128'
                ),
                f"add rule {t} deny_{reason} meta l4proto tcp reject with tcp reset",
                f"add rule {t} deny_{reason} reject with icmpx admin-prohibited",
            ]
        script += [
            f"add chain {t} {ALLOWED}",
            f"flush chain {t} {ALLOWED}",
            (
                f"add rule {t} {ALLOWED} ct state new add @allowlog {{ ip saddr {LOG_RATE} }}"
                f' log prefix "{ALLOWED}" group {self.group} snaplen 128'
            ),
            f"add rule {t} {ALLOWED} accept",
        ]
        pairs = "ip saddr . ip daddr"
        for chain, kind, verdict in (
            ("deny_nets", "deny", "goto deny_policy"),
            ("allow_nets", "allow", "accept"),
            ("allow_nets_audit", "allow", f"goto {ALLOWED}"),
        ):
            script += [f"add chain {t} {chain}", f"flush chain {t} {chain}"]
            script += [
                f"add rule {t} {chain} ip saddr . ip daddr & {_mask(n)} @{kind}{n} {verdict}"
                for n in reversed(LENGTHS)
            ]
        live = f"update @live {{ {pairs} timeout {LIVE_TIMEOUT} }}"
        for mode in MODES:
            rule = f"add rule {t} {mode}"
            audit = mode.endswith("_audit")
            accept = f"goto {ALLOWED}" if audit else "accept"
            script += [
                f"add chain {t} {mode}",
                f"flush chain {t} {mode}",
                f"{rule} ip saddr @denies jump deny_nets",
                f"{rule} {pairs} @block goto deny_policy",
            ]
            if mode.startswith("allow_all"):
                script.append(f"{rule} {accept}")
                continue
            script += [
                f"{rule} ip saddr @allows jump allow_nets{'_audit' if audit else ''}",
                f"{rule} {pairs} @pin {live}",  # apart: a full set must not deny
                f"{rule} {pairs} @pin {accept}",
                f"{rule} ct state established,related {pairs} @live {live} accept",
                f"{rule} goto deny_policy",
            ]
        gw = self.gateway
        script += [
            f"add rule {t} input iifname != {br} accept",
            f"add rule {t} input meta nfproto ipv6 drop",
            (
                f"add rule {t} input ip daddr {gw} udp dport 53 update @dnsrate"
                f" {{ ip saddr limit rate over {self.dns_rate}/second burst {self.dns_burst} packets }} drop"
            ),
            f"add rule {t} input ip daddr {gw} udp dport 53 accept",
            f"add rule {t} input ip daddr {gw} tcp dport 53 accept",
            *(f"add rule {t} input ip daddr {gw} tcp dport {int(port)} accept" for port in open_ports),
            f"add rule {t} input ct state established,related accept",
            f"add rule {t} input meta pkttype {{ broadcast, multicast }} drop",
            f"add rule {t} input goto deny_host",
            f"add rule {t} forward meta nfproto ipv6 iifname {br} drop",
            f"add rule {t} forward meta nfproto ipv6 oifname {br} drop",
            f"add rule {t} forward iifname {br} ct status dnat goto deny_host",
            f"add rule {t} forward iifname {br} oifname {br} goto deny_reserved",
            f"add rule {t} forward iifname {br} ip daddr @reserved goto deny_reserved",
            f"add rule {t} forward iifname {br} ip saddr vmap @sandboxes",
            f"add rule {t} forward iifname {br} drop",
            f"add rule {t} forward oifname {br} ct state established,related accept",
            f"add rule {t} forward oifname {br} drop",
            f"add rule {t} postrouting ip saddr {self.network} oifname != {br} masquerade",
        ]
        b = f"bridge {self.table}"
        script += [
            f"add table {b}",
            f"add set {b} ports {{ type ifname; }}",
            f"add set {b} bound {{ type ifname . ipv4_addr; }}",
            f"add chain {b} prerouting {{ type filter hook prerouting priority -200; policy accept; }}",
            f"flush chain {b} prerouting",
            f"add rule {b} prerouting iifname != @ports accept",
            f"add rule {b} prerouting ether type ip iifname . ip saddr @bound accept",
            f"add rule {b} prerouting ether type arp iifname . arp saddr ip @bound accept",
            f"add rule {b} prerouting drop",
        ]
        script += [
            f"add set {t} probe {{ type ipv4_addr; flags timeout; }}",
            f"flush set {t} probe",
            f"add element {t} probe {{ 192.0.2.1 timeout 60s }}",
        ]
        script += await self._legacy_intervals()
        await self._apply(script)
        await self._probe()
        await self._migrate()
        await self._load()

    async def _probe(self) -> None:
        """Learn whether re-adding an element updates its timeout (kernels since 6.10
        do); if not, :meth:`pin` replaces elements instead (slower: a deletion in a
        transaction waits for an RCU grace period, ~15 ms)."""
        await self._apply([f"add element inet {self.table} probe {{ 192.0.2.1 timeout 3600s }}"])
        timeouts = [
            elem.get("elem", {}).get("timeout")
            for item in await self._list("set", "inet", self.table, "probe")
            for elem in item.get("set", {}).get("elem", [])
            if isinstance(elem, dict)
        ]
        self.updates_timeouts = timeouts == [3600]

    async def _migrate(self) -> None:
        """Move the per-sandbox chains and sets of earlier versions into the shared
        sets (see the module docstring); nothing to do on a table without them."""
        t = f"inet {self.table}"
        chains = {
            str(item["chain"]["name"])
            for item in await self._list("chains", "inet")
            if isinstance(item.get("chain"), dict)
            and item["chain"].get("table") == self.table
            and is_chain(str(item["chain"].get("name")))
        }
        if not chains:
            return
        routed = {chain: address for address, chain, _ in await self._map() if chain in chains}
        script = [f"delete element {t} sandboxes {{ {address} }}" for address in routed.values()]
        script += [
            line
            for chain in sorted(chains)
            for line in (f"flush chain {t} {chain}", f"delete chain {t} {chain}")
        ]
        for chain in sorted(chains):
            address = routed.get(chain)
            for kind in OLD_KINDS:
                name = f"{chain}-{kind}"
                elements = await self._elements(name)
                if elements is None:
                    continue
                script.append(f"delete set {t} {name}")
                if address is not None and elements:
                    pairs = ", ".join(f"{address} . {d} timeout {max(1, s)}s" for d, s in elements)
                    script.append(f"add element {t} {kind} {{ {pairs} }}")
        await self._apply(script)

    async def _legacy_intervals(self) -> list[str]:
        """For a table with the ``deny`` and ``allow`` sets of concatenated ranges (an
        earlier shared layout: deleting from them cost O(elements) in the kernel), the
        commands that move their networks into ``deny<n>`` and ``allow<n>`` and delete
        them; they run in the same transaction as the rewritten chains."""
        t, script = f"inet {self.table}", []
        for kind in NET_KINDS:
            items = await self._list("set", "inet", self.table, kind)
            if not items:
                continue
            script.append(f"delete set {t} {kind}")
            nets: dict[str, list[str]] = {}
            for item in items:
                for elem in item.get("set", {}).get("elem", []):
                    pair = _pair(elem)
                    if pair is not None:
                        nets.setdefault(pair[0], []).extend(_networks(pair[1]))
            for address, found in nets.items():
                script += _net_elements(t, kind, address, _collapse(found), "add")
        return script

    async def _elements(self, name: str) -> list[tuple[str, int]] | None:
        """(address, seconds left) of the single-address set ``name``; None if absent."""
        items = await self._list("set", "inet", self.table, name)
        if not items:
            return None
        out = []
        for item in items:
            for elem in item.get("set", {}).get("elem", []):
                if isinstance(elem, dict) and isinstance(elem.get("elem"), dict):
                    value, left = elem["elem"].get("val"), elem["elem"].get("expires", 0)
                    if isinstance(value, str) and isinstance(left, int) and left >= 1:
                        out.append((value, left))
        return out

    async def _map(self) -> list[tuple[str, str, str | None]]:
        """(address, chain it goes to, comment) of the ``sandboxes`` map's elements."""
        out = []
        for item in await self._list("map", "inet", self.table, "sandboxes"):
            for elem in item.get("map", {}).get("elem", []):
                try:
                    key, verdict = elem
                    target = verdict["goto"]["target"]
                    if isinstance(key, dict):
                        address, comment = key["elem"]["val"], key["elem"].get("comment")
                    else:
                        address, comment = key, None
                except (ValueError, KeyError, TypeError):
                    continue
                if isinstance(address, str) and isinstance(target, str):
                    out.append((address, target, comment if isinstance(comment, str) else None))
        return out

    async def _load(self) -> None:
        """Read back what is written for each source address (the in-memory record
        detach and replace delete by), from one listing of the table. Once per start:
        its cost grows with the number of sandboxes, an attach's and a detach's do not."""
        sources: dict[str, _Source] = {}
        for address, target, comment in await self._map():
            if target in MODES:
                source = sources.setdefault(address, _Source())
                source.verdict, source.key = target, comment if comment and is_chain(comment) else None
        nets = {f"{kind}{n}": (kind, n) for kind in NET_KINDS for n in LENGTHS}
        for item in await self._list("table", "inet", self.table):
            found = item.get("set")
            if not isinstance(found, dict) or not isinstance(found.get("elem"), list):
                continue
            name = found.get("name")
            for elem in found["elem"]:
                pair = _pair(elem)
                if pair is None:
                    continue
                source = sources.setdefault(pair[0], _Source())
                if name in nets:
                    kind, n = nets[name]
                    (source.deny if kind == "deny" else source.allow).append(f"{pair[1]}/{n}")
                elif name in ("pin", "live"):
                    source.pinned.add(pair[1])
                elif name == "block":
                    source.blocked.add(pair[1])
        prepared: dict[str, str] = {}
        for item in await self._list("set", "bridge", self.table, "ports"):
            for elem in item.get("set", {}).get("elem", []):
                if isinstance(elem, dict) and isinstance(elem.get("elem"), dict):
                    veth, comment = elem["elem"].get("val"), elem["elem"].get("comment")
                    if isinstance(veth, str) and isinstance(comment, str) and is_chain(comment):
                        prepared[comment] = veth
        self._sources = sources
        self._keys = {source.key: address for address, source in sources.items() if source.key}
        self._prepared = {key: veth for key, veth in prepared.items() if key not in self._keys}

    async def remove_all(self) -> None:
        """Delete both tables (tests and uninstall; a node keeps them). Idempotent."""
        await self._apply(
            [
                f"add table inet {self.table}",
                f"delete table inet {self.table}",
                f"add table bridge {self.table}",
                f"delete table bridge {self.table}",
            ]
        )
        self._sources, self._keys, self._prepared = {}, {}, {}

    # -- one sandbox -----------------------------------------------------------------

    def _clear(self, address: str, source: _Source, *, keep_pins: bool = False) -> list[str]:
        """Delete what is written for ``address`` (each deletion after an ``add`` of
        the same element, so that it succeeds whether the element is there or not);
        with ``keep_pins``, only its routing and networks."""
        t = f"inet {self.table}"
        script = []
        if source.verdict is not None:
            script += [
                f"add element {t} sandboxes {{ {address} : goto {source.verdict} }}",
                f"delete element {t} sandboxes {{ {address} }}",
            ]
        for kind, nets in (("deny", source.deny), ("allow", source.allow)):
            script += _net_elements(t, kind, address, nets, "add")
            script += _net_elements(t, kind, address, nets, "delete")
        if keep_pins:
            return script
        for kinds, destinations in ((("pin", "live"), source.pinned), (("block",), source.blocked)):
            if destinations:
                expiring = ", ".join(f"{address} . {d} timeout 1s" for d in sorted(destinations))
                bare = ", ".join(f"{address} . {d}" for d in sorted(destinations))
                for kind in kinds:
                    script += [
                        f"add element {t} {kind} {{ {expiring} }}",
                        f"delete element {t} {kind} {{ {bare} }}",
                    ]
        return script

    def _write(self, key: str, address: str, rules: Rules) -> tuple[list[str], _Source]:
        """Route ``address`` to ``rules``' mode chain and add its networks."""
        t = f"inet {self.table}"
        new = _Source(key=key, verdict=mode_chain(rules))
        new.deny = _collapse(rules.deny_nets)
        if rules.mode is EgressMode.DENY_ALL:
            new.allow = _collapse(rules.allow_nets)
        script = [f'add element {t} sandboxes {{ {address} comment "{key}" : goto {new.verdict} }}']
        for kind, nets in (("deny", new.deny), ("allow", new.allow)):
            script += _net_elements(t, kind, address, nets, "add")
        return script, new

    def _bind(self, veth: str, address: str, verb: str, *, port: bool = True) -> list[str]:
        b = f"bridge {self.table}"
        script = [f'{verb} element {b} ports {{ "{veth}" }}'] if port else []
        return [*script, f'{verb} element {b} bound {{ "{veth}" . {address} }}']

    def _address(self, key: str) -> str:
        address = self._keys.get(key)
        if address is None:
            raise RuntimeFailure(f"the firewall routes nothing to {key}")
        return address

    async def attach(self, sid: str, veth: str, address: str, rules: Rules, *, made: bool = False) -> None:
        """Route ``address`` (the sandbox keyed ``sid``) to ``rules`` and bind it to its
        host end ``veth``; with ``made``, ``veth`` is in the bridge's ``ports`` set
        already (:meth:`prepare`). Whatever another key left for ``address`` is deleted
        in the same transaction; the same key's pins are kept (a restart's re-attach).
        Undo with :meth:`detach`."""
        _check(sid)
        ipaddress.IPv4Address(address)
        old = self._sources.get(address, _Source())
        script = self._clear(address, old, keep_pins=old.key in (None, sid))
        added, new = self._write(sid, address, rules)
        if old.key in (None, sid):
            new.pinned, new.blocked = old.pinned, old.blocked
        await self._apply([*script, *added, *self._bind(veth, address, "add", port=not made)])
        self._forget_key(address)
        self._sources[address] = new
        self._keys[sid] = address
        self._prepared.pop(sid, None)

    async def replace(self, sid: str, rules: Rules, pins: Pins, blocks: Pins) -> None:
        """Swap the sandbox's policy for ``rules`` and its pinned and blocked addresses
        for ``pins`` and ``blocks`` in one transaction."""
        _check(sid)
        address = self._address(sid)
        t = f"inet {self.table}"
        script = self._clear(address, self._sources.get(address, _Source()))
        added, new = self._write(sid, address, rules)
        script += added
        if pins:
            script.append(f"add element {t} pin {{ {_elements(address, pins)} }}")
            script.append(f"add element {t} live {{ {_elements(address, pins)} }}")
        if blocks:
            script.append(f"add element {t} block {{ {_elements(address, blocks)} }}")
        await self._apply(script)
        new.pinned = {d for d, _ in pins}
        new.blocked = {d for d, _ in blocks}
        self._sources[address] = new

    async def pin(self, sid: str, kind: str, pins: Pins) -> None:
        """Put ``pins`` into the shared ``pin`` or ``block`` set for the sandbox with
        exactly the given timeouts (existing elements get the new timeout)."""
        _check(sid)
        if kind not in ("pin", "block"):
            raise ValueError(kind)
        if not pins:
            return
        address = self._address(sid)
        target = f"inet {self.table} {kind}"
        if self.updates_timeouts:
            await self._apply([f"add element {target} {{ {_elements(address, pins)} }}"])
        else:
            bare = ", ".join(f"{address} . {d}" for d, _ in pins)
            await self._apply(
                [
                    f"add element {target} {{ {bare} }}",
                    f"delete element {target} {{ {bare} }}",
                    f"add element {target} {{ {_elements(address, pins)} }}",
                ]
            )
        source = self._sources.setdefault(address, _Source(key=sid))
        (source.pinned if kind == "pin" else source.blocked).update(d for d, _ in pins)

    async def detach(self, sid: str, veth: str, address: str | None) -> None:
        """Delete the sandbox's elements and bindings (``address`` None: the one the
        firewall routes to ``sid``, if any). Idempotent."""
        _check(sid)
        address = address or self._keys.get(sid)
        source = self._sources.get(address, _Source()) if address is not None else _Source()
        if source.key not in (None, sid):
            source = _Source()  # the address is another sandbox's by now: leave its elements
        script = self._clear(address, source) if address is not None else []
        if address is not None:
            script += self._bind(veth, address, "add") + self._bind(veth, address, "delete")
        else:
            b = f"bridge {self.table}"
            script += [f'add element {b} ports {{ "{veth}" }}', f'delete element {b} ports {{ "{veth}" }}']
        await self._apply(script)
        if address is not None and self._sources.get(address) is source:
            del self._sources[address]
        if address is not None and self._keys.get(sid) == address:
            del self._keys[sid]
        self._prepared.pop(sid, None)

    def _forget_key(self, address: str) -> None:
        old = self._sources.get(address)
        if old is not None and old.key is not None and self._keys.get(old.key) == address:
            del self._keys[old.key]

    async def prepare(self, spares: Sequence[tuple[str, str]]) -> None:
        """For ready namespaces, (key, host end) each: put the host end into the bridge
        table's ``ports`` set (the key as its comment) before it exists. With no
        address bound, every frame from it is dropped and nothing routes to it until a
        sandbox claims it (:meth:`attach`). Undo with :meth:`detach` (no address).
        Idempotent."""
        for key, _ in spares:
            _check(key)
        if not spares:
            return
        names = ", ".join(f'"{veth}" comment "{key}"' for key, veth in spares)
        await self._apply([f"add element bridge {self.table} ports {{ {names} }}"])
        self._prepared.update(dict(spares))

    # -- what is there ---------------------------------------------------------------

    async def _list(self, *what: str) -> list[dict[str, Any]]:
        done = await command.run(["nft", "-j", "list", *what], check=False)
        if not done.ok:
            if "No such file or directory" in done.stderr:
                return []
            raise RuntimeFailure(done.describe())
        try:
            items = json.loads(done.stdout)["nftables"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeFailure(f"nft printed unreadable JSON: {exc}") from exc
        return [item for item in items if isinstance(item, dict)]

    async def bindings(self) -> dict[str, str]:
        """Key (sandbox id or claimed ready namespace) -> address, as routed by the
        ``sandboxes`` map (or routed by an earlier version's chain, until re-attached)."""
        return dict(self._keys)

    async def sandbox_chains(self) -> set[str]:
        """Keys the firewall routes to a policy (see :func:`is_chain`)."""
        return {key for key, address in self._keys.items() if self._sources[address].verdict is not None}

    async def prepared(self) -> set[str]:
        """Keys of ready namespaces whose host end :meth:`prepare` put in the bridge's
        ``ports`` set and no sandbox is routed by."""
        return set(self._prepared) - set(self._keys)

    async def counters(self) -> str:
        """The whole inet table as text (diagnostics)."""
        return (await command.run(["nft", "list", "table", "inet", self.table])).stdout


def _check(sid: str) -> None:
    if not is_chain(sid):
        raise ValueError(f"not a sandbox's key: {sid!r}")


def _collapse(nets: Iterable[str | ipaddress.IPv4Network]) -> list[str]:
    """IPv4 networks merged (nft rejects overlapping intervals); IPv6 ones are
    dropped (there is no IPv6 egress). ValueError for a malformed one."""
    parsed = [
        n if isinstance(n, ipaddress.IPv4Network) else ipaddress.ip_network(n, strict=False) for n in nets
    ]
    return [str(n) for n in ipaddress.collapse_addresses(p for p in parsed if p.version == 4)]


def _elements(address: str, pins: Pins) -> str:
    return ", ".join(f"{address} . {d} timeout {max(1, int(seconds))}s" for d, seconds in pins)


def _mask(length: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{length}").netmask)


def _networks(text: str) -> list[str]:
    """A network, an address or a range ``a-b`` as networks."""
    if "-" not in text:
        return [str(ipaddress.IPv4Network(text, strict=False))]
    low, high = (ipaddress.IPv4Address(part) for part in text.split("-", 1))
    return [str(net) for net in ipaddress.summarize_address_range(low, high)]


def _net_elements(table: str, kind: str, address: str, nets: Sequence[str], verb: str) -> list[str]:
    """``verb`` (add or delete) ``address``'s ``nets`` in the sets ``<kind><length>``
    and, with any, its element in ``denies`` or ``allows``."""
    if not nets:
        return []
    by_length: dict[int, list[str]] = {}
    for net in nets:
        parsed = ipaddress.IPv4Network(net, strict=False)
        by_length.setdefault(parsed.prefixlen, []).append(f"{address} . {parsed.network_address}")
    script = [
        f"{verb} element {table} {kind}{n} {{ {', '.join(pairs)} }}" for n, pairs in sorted(by_length.items())
    ]
    return [*script, f"{verb} element {table} {GUARDS[kind]} {{ {address} }}"]


def _pair(elem: object) -> tuple[str, str] | None:
    """(source, destination or network) of a shared set's element in nft's JSON."""
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"].get("val") if isinstance(elem["elem"], dict) else None
    if not isinstance(elem, dict) or not isinstance(elem.get("concat"), list) or len(elem["concat"]) != 2:
        return None
    source, destination = elem["concat"]
    if isinstance(destination, dict) and isinstance(destination.get("prefix"), dict):
        prefix = destination["prefix"]
        destination = f"{prefix.get('addr')}/{prefix.get('len')}"
    elif isinstance(destination, dict) and isinstance(destination.get("range"), list):
        low, high = destination["range"]
        nets = list(
            ipaddress.summarize_address_range(ipaddress.IPv4Address(low), ipaddress.IPv4Address(high))
        )
        destination = str(nets[0]) if len(nets) == 1 else f"{low}-{high}"
    if not isinstance(source, str) or not isinstance(destination, str):
        return None
    return source, destination
