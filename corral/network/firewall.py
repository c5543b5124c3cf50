"""nftables rules of the node and of each sandbox (one transaction per operation, so
every change is atomic: in this process through libnftables, ``nftlib.py``, or one
``nft -f -`` process where the library is missing).

Two tables, both named after the ``table`` setting (default ``corral``) and owned by
corral alone (nothing else is touched; other tables keep working):

``table bridge corral`` (layer 2, before anything else): frames entering the bridge
from a sandbox's port must carry that sandbox's IPv4 source address (IPv4 or ARP);
everything else from a sandbox port, IPv6 included, is dropped. No sandbox can spoof
another's address, so the source address identifies the sandbox below.

``table inet corral``:

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
  sandbox's own chain through the ``sandboxes`` verdict map. Nobody but the host
  opens connections *into* a sandbox (only established/related pass outward-in).
* one chain per sandbox, named after its id (or, for a sandbox that claimed a ready
  namespace, after that namespace: ``pool-<tag>``, made with its sets ahead of time by
  :meth:`Firewall.prepare`), with its policy: deny networks and the
  ``<id>-block`` set first (deny wins), then (deny_all) allow networks, the
  ``<id>-pin`` set filled by the resolver (resolve-and-pin), the ``<id>-live`` set
  (pinned addresses still in use), and ``deny_policy``; or (allow_all) ``accept``.
  Rules are evaluated for every packet, not only for new connections, so a policy
  change cuts flows it no longer allows at once (TCP gets a reset): no conntrack
  flush is needed. Traffic to a pinned address keeps it in ``<id>-live`` until 30 min
  after its last packet, so a long download outlives the DNS answer that opened it;
  a new connection still needs an unexpired pin. ``<id>-live`` holds at most
  ``LIVE_SIZE`` addresses (the kernel sizes a set's hash table by its ``size`` up
  front: 65535 cost 2 MiB of kernel memory per sandbox, 4096 costs 0.12 MiB); when it
  is full, traffic to a pinned address still passes (its update is a rule of its own),
  only its outliving the pin is lost.
* ``postrouting``: masquerade traffic from the pool leaving through any other
  interface.
* ``deny_host``, ``deny_reserved``, ``deny_policy``: log the first packet of each
  attempt to NFLOG group ``group`` with the chain's reason as prefix, at most 20 per
  second per source address (a dynamic set of token buckets), then reject (TCP reset,
  ICMP administratively prohibited otherwise) so that clients fail fast.
* ``allowed``: where a sandbox's policy has ``audit_allowed``, its chain's accepts go
  here instead: the first packet of each new connection is logged to the same group
  with the prefix ``allowed``, at most 20 per second per source address (its own
  buckets, ``allowlog``), then accepted. Other sandboxes' chains accept directly and
  log nothing.

Idempotency: :meth:`Firewall.setup` may run at every start (it rewrites only the base
chains; sandbox chains, maps and pins survive). :meth:`Firewall.detach` succeeds when
the objects are already gone (it declares each object before deleting it within the
same transaction).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
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
LIVE_SIZE = 4096  # addresses a sandbox keeps in use beyond their pins (see the docstring)
LOG_RATE = "limit rate 20/second burst 50 packets"

Pins = Sequence[tuple[str, int]]  # (address, timeout in seconds)
POOL_CHAIN = re.compile(r"pool-[0-9a-f]{12}")


def is_chain(name: str) -> bool:
    """Whether ``name`` names a sandbox's chain: a sandbox id, or a ready namespace's."""
    return ids.is_valid(name, "sb") or POOL_CHAIN.fullmatch(name) is not None


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

    async def _apply(self, script: Iterable[str]) -> None:
        text = "\n".join(script) + "\n"
        if nftlib.available():
            await nftlib.apply(text)
        else:
            await command.run(["nft", "-f", "-"], stdin=text)

    # -- the node --------------------------------------------------------------------

    async def setup(self, open_ports: Sequence[int] = ()) -> None:
        """Create or rewrite the base tables, chains and sets; ``open_ports``: TCP ports
        of the bridge address sandboxes may reach (the binding forwarder's)."""
        t, br = f"inet {self.table}", f'"{self.bridge}"'
        base = {
            "input": "type filter hook input priority filter - 10; policy accept;",
            "forward": "type filter hook forward priority filter - 10; policy accept;",
            "postrouting": "type nat hook postrouting priority srcnat + 10; policy accept;",
        }
        script = [
            f"add table {t}",
            f"add set {t} reserved {{ type ipv4_addr; flags interval; auto-merge; }}",
            f"add set {t} denylog {{ type ipv4_addr; flags dynamic,timeout; timeout 1m; size 65536; }}",
            f"add set {t} allowlog {{ type ipv4_addr; flags dynamic,timeout; timeout 1m; size 65536; }}",
            f"add set {t} dnsrate {{ type ipv4_addr; flags dynamic,timeout; timeout 1m; size 65536; }}",
            f"add map {t} sandboxes {{ type ipv4_addr : verdict; }}",
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
        await self._apply(script)
        await self._probe()

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

    # -- one sandbox -----------------------------------------------------------------

    def _declare(self, sid: str) -> list[str]:
        t = f"inet {self.table}"
        return [
            f"add chain {t} {sid}",
            f"add set {t} {sid}-pin {{ type ipv4_addr; flags timeout; }}",
            f"add set {t} {sid}-block {{ type ipv4_addr; flags timeout; }}",
            f"add set {t} {sid}-live {{ type ipv4_addr; flags dynamic,timeout; size {LIVE_SIZE}; }}",
        ]

    def _policy(self, sid: str, rules: Rules) -> list[str]:
        rule = f"add rule inet {self.table} {sid}"
        script = [f"flush chain inet {self.table} {sid}"]
        accept = f"goto {ALLOWED}" if rules.audit_allowed else "accept"
        if rules.deny_nets:
            script.append(f"{rule} ip daddr {{ {', '.join(_collapse(rules.deny_nets))} }} goto deny_policy")
        script.append(f"{rule} ip daddr @{sid}-block goto deny_policy")
        if rules.mode is EgressMode.ALLOW_ALL:
            return [*script, f"{rule} {accept}"]
        if rules.allow_nets:
            script.append(f"{rule} ip daddr {{ {', '.join(_collapse(rules.allow_nets))} }} {accept}")
        live = f"update @{sid}-live {{ ip daddr timeout {LIVE_TIMEOUT} }}"
        return [
            *script,
            f"{rule} ip daddr @{sid}-pin {live}",  # apart: a full set must not deny
            f"{rule} ip daddr @{sid}-pin {accept}",
            f"{rule} ct state established,related ip daddr @{sid}-live {live} accept",
            f"{rule} goto deny_policy",
        ]

    def _bind(self, sid: str, veth: str, address: str, verb: str) -> list[str]:
        b = f"bridge {self.table}"
        return [
            f"{verb} element inet {self.table} sandboxes {{ {address} : goto {sid} }}",
            f'{verb} element {b} ports {{ "{veth}" }}',
            f'{verb} element {b} bound {{ "{veth}" . {address} }}',
        ]

    async def attach(self, sid: str, veth: str, address: str, rules: Rules, *, made: bool = False) -> None:
        """Create the sandbox's chain and sets with ``rules`` and route its address to
        them; with ``made``, the chain and sets exist already (:meth:`prepare`) and are
        not declared again (re-declaring an existing set makes the transaction ~3x
        slower). Undo with :meth:`detach`."""
        _check(sid)
        declare = [] if made else self._declare(sid)
        await self._apply([*declare, *self._policy(sid, rules), *self._bind(sid, veth, address, "add")])

    async def replace(self, sid: str, rules: Rules, pins: Pins, blocks: Pins) -> None:
        """Swap the sandbox's policy for ``rules`` and its pinned and blocked addresses
        for ``pins`` and ``blocks`` in one transaction."""
        _check(sid)
        t = f"inet {self.table}"
        script = [*self._declare(sid), *self._policy(sid, rules)]
        script += [f"flush set {t} {sid}-{kind}" for kind in ("pin", "live", "block")]
        if pins:
            script.append(f"add element {t} {sid}-pin {{ {_elements(pins)} }}")
            script.append(f"add element {t} {sid}-live {{ {_elements(pins)} }}")
        if blocks:
            script.append(f"add element {t} {sid}-block {{ {_elements(blocks)} }}")
        await self._apply(script)

    async def pin(self, sid: str, kind: str, pins: Pins) -> None:
        """Put ``pins`` into the sandbox's ``pin`` or ``block`` set with exactly the
        given timeouts (existing elements get the new timeout)."""
        _check(sid)
        if kind not in ("pin", "block"):
            raise ValueError(kind)
        if not pins:
            return
        target = f"inet {self.table} {sid}-{kind}"
        if self.updates_timeouts:
            await self._apply([f"add element {target} {{ {_elements(pins)} }}"])
            return
        bare = ", ".join(address for address, _ in pins)
        await self._apply(
            [
                f"add element {target} {{ {bare} }}",
                f"delete element {target} {{ {bare} }}",
                f"add element {target} {{ {_elements(pins)} }}",
            ]
        )

    async def detach(self, sid: str, veth: str, address: str | None) -> None:
        """Remove the sandbox's chain, sets and bindings. Idempotent."""
        _check(sid)
        t = f"inet {self.table}"
        script = self._declare(sid) + [f"flush chain {t} {sid}"]
        if address is not None:
            script += self._bind(sid, veth, address, "add") + self._bind(sid, veth, address, "delete")
        else:
            b = f"bridge {self.table}"
            script += [f'add element {b} ports {{ "{veth}" }}', f'delete element {b} ports {{ "{veth}" }}']
        script += [f"delete chain {t} {sid}"] + [
            f"delete set {t} {sid}-{k}" for k in ("pin", "block", "live")
        ]
        await self._apply(script)

    async def prepare(self, spares: Sequence[tuple[str, str]]) -> None:
        """For ready namespaces, (chain, host end) each: make the chain (empty) and its
        sets, and put the host end into the bridge table's ``ports`` set before it
        exists. With no address bound, every frame from it is dropped and nothing routes
        to the chain until a sandbox claims it (:meth:`attach`, which then only adds
        rules and bindings). Undo with :meth:`detach` (no address). Idempotent."""
        for chain, _ in spares:
            _check(chain)
        script = [line for chain, _ in spares for line in self._declare(chain)]
        names = ", ".join(f'"{veth}"' for _, veth in spares)
        await self._apply([*script, f"add element bridge {self.table} ports {{ {names} }}"])

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
        """Chain (sandbox id or ready namespace) -> address, as routed by the
        ``sandboxes`` map."""
        out: dict[str, str] = {}
        for item in await self._list("map", "inet", self.table, "sandboxes"):
            for elem in item.get("map", {}).get("elem", []):
                try:
                    address, verdict = elem
                    target = verdict["goto"]["target"]
                except (ValueError, KeyError, TypeError):
                    continue
                if isinstance(target, str) and isinstance(address, str) and is_chain(target):
                    out[target] = address
        return out

    async def sandbox_chains(self) -> set[str]:
        """Names of the sandboxes' chains in the table (see :func:`is_chain`)."""
        found = set()
        for item in await self._list("chains", "inet"):
            chain = item.get("chain", {})
            name = chain.get("name")
            if chain.get("table") == self.table and isinstance(name, str) and is_chain(name):
                found.add(name)
        return found

    async def counters(self) -> str:
        """The whole inet table as text (diagnostics)."""
        return (await command.run(["nft", "list", "table", "inet", self.table])).stdout


def _check(sid: str) -> None:
    if not is_chain(sid):
        raise ValueError(f"not a sandbox's chain: {sid!r}")


def _collapse(nets: Iterable[str | ipaddress.IPv4Network]) -> list[str]:
    """IPv4 networks merged (nft rejects overlapping intervals); IPv6 ones are
    dropped (there is no IPv6 egress). ValueError for a malformed one."""
    parsed = [
        n if isinstance(n, ipaddress.IPv4Network) else ipaddress.ip_network(n, strict=False) for n in nets
    ]
    return [str(n) for n in ipaddress.collapse_addresses(p for p in parsed if p.version == 4)]


def _elements(pins: Pins) -> str:
    return ", ".join(f"{address} timeout {max(1, int(seconds))}s" for address, seconds in pins)
