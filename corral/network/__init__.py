"""Sandbox networking on one node (DESIGN.md decision 5): the ``Network`` port.

``NodeNetwork`` (``node.py``) is the real adapter; ``NullNetwork`` (``null.py``) is
the fake for tests of the layers above. Policies are parsed and validated in the
domain (``corral.domain.egress``); ``policy.py`` compiles them into what the firewall
and the resolver enforce.

Topology: each sandbox has a named network namespace with ``lo`` and ``eth0`` (its
address from the pool as a /32, default route via the bridge), and a veth to the
bridge ``corral0``, whose address (the pool's first, ``10.213.0.1`` by default) is the
sandbox's gateway and DNS server. Egress is NATed (masquerade) out of whatever
interface the host routes it to. The namespace is usually one made ahead
(``/run/netns/corral-pool-<tag>``, see ``spares.py``: until claimed it can send
nothing) and claimed at create by binding the sandbox's rules to its address; when
none is ready it is made on the spot as ``/run/netns/corral-<id>``. Either way the
path is in ``NetInfo``, and the ledger keeps the names.

Security model, in order of evaluation (``firewall.py`` has the rules):

1. Layer 2: bridge ports are isolated (no frame goes from one sandbox to another),
   and a frame from a sandbox must carry that sandbox's IPv4 address (IPv4 and ARP
   only; IPv6 is dropped): no spoofing, so a source address names a sandbox.
2. Always denied, whatever the policy: every address of the host (the bridge address
   too, except its port 53 where the resolver listens and the TCP port of the
   service-binding forwarder, ``forwarder.py``, which answers only a sandbox granted a
   binding; so also the control plane and the gateway ports, and ports the host
   publishes by DNAT), other sandboxes (nothing is forwarded back into the bridge),
   ``169.254.0.0/16`` (cloud metadata), loopback, ``0/8``, multicast, class E, the
   whole pool, and operator-configured ``extra_denied`` networks (private networks of
   the site, say). IPv6: switched off
   on the sandbox's ``eth0`` and dropped at the bridge, so ``fe80::/10`` and every
   other IPv6 destination are unreachable (``::1`` on its own ``lo`` works).
3. The sandbox's policy. ``deny`` entries win over ``allow`` entries.

   * ``deny_all``: only allow-listed networks, and addresses the sandbox learned by
     resolving an allow-listed name *through our resolver*, are reachable
     (resolve-and-pin): the resolver answers only allowed names (others get NXDOMAIN
     and count as denials), and before relaying an answer it adds the answer's
     addresses to the sandbox's nftables pin set with a timeout of at least the TTL.
   * ``allow_all``: everything not denied. Denied networks are closed in nftables;
     denied names get NXDOMAIN from the resolver, and their addresses (looked up by
     the node itself when the sandbox asks, and kept fresh for exact names) go into
     the sandbox's block set.

How the usual tricks fare:

* *Hardcoded IPs*: under deny_all, an address that is neither in an allowed network
  nor pinned by a resolution of an allowed name is rejected. Under allow_all they
  work unless denied by a CIDR or pinned in the block set.
* *DNS as a tunnel*: under deny_all only allowed names are forwarded upstream, so
  queries cannot carry data to a name server of the sandbox's choosing.
* *Other resolvers* (8.8.8.8, DNS over HTTPS): under deny_all they are unreachable
  unless their address is allowed by a CIDR (then, knowingly, names resolved there
  do not open anything: only our resolver pins). Under allow_all they are reachable,
  which is the honest limit of hostname *deny* rules under allow_all: a sandbox that
  resolves a denied name elsewhere reaches it unless its address is in the block
  set (it is when the name is exact and resolves the same way for us, or when the
  sandbox asked us first). Use deny_all + allow list where names must hold.
* *DNS rebinding* (an allowed name answering with an internal address): pins count only in
  the policy's mode chain, which comes after the always-denied checks, so no
  answer can open the host, other sandboxes, link-local or loopback; and only
  globally routable answers are pinned at all (``pin_private=False``, the default),
  so an allowed name cannot open a private network (RFC 1918, CGNAT, ...) either:
  those open only through a CIDR allow entry.
* *Names in a label* (``evil\\.com.allowed.com``), case games, trailing dots: names
  are compared label by label in canonical form; odd bytes never match a rule.
* *Shared addresses* (CDNs): enforcement is by address (every port of it, for that
  sandbox only), so an allowed name and a denied name on the same address cannot be
  told apart; deny wins for blocked addresses under allow_all, the allowed name wins
  for pinned ones under deny_all.
* *Open connections* when the policy changes: rules apply to every packet, not only
  to new connections, so a flow the new policy does not allow is cut at once (TCP
  reset); a pinned flow outlives its DNS TTL while it carries traffic.
* *Taking DNS from the others* (flooding the shared resolver, e.g. with names whose
  upstream never answers): bounded per sandbox (rate, queries at once; the kernel
  drops UDP beyond twice the rate), per org (queries at the upstreams) and for the
  node, with a reserve for tenants within their limits; beyond a bound the answer is
  REFUSED at once (``quota.py``, docs/security.md).

Denied attempts (rejected packets, logged through NFLOG; refused names) become
``on_denied(sandbox_id, event)`` calls, rate-limited per sandbox (``denials.py``).
"""

from __future__ import annotations

from corral.network.node import NodeNetwork
from corral.network.null import NullNetwork

__all__ = ["NodeNetwork", "NullNetwork"]
