"""The private address pool of the bridge: which address each sandbox gets.

The pool is an IPv4 network (default ``10.213.0.0/16``); its first host address is the
bridge's own (the sandboxes' gateway and DNS server), the rest go to sandboxes, one
each. Allocation walks forward from the last address handed out (wrapping around), so
an address freed by one sandbox is not reused by the next one at once: conntrack
entries and DNS pins of the old owner have time to expire. The pool keeps no state of
its own; the caller passes what is taken (the ledger persists it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from corral.errors import CorralError, LimitExceeded


class AddressPool:
    """Address arithmetic over one network. CorralError at construction for a network
    too small (fewer than two sandbox addresses) or not IPv4."""

    def __init__(self, cidr: str) -> None:
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise CorralError(f"network pool {cidr!r} is not a network: {exc}") from exc
        if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > 29:
            raise CorralError(f"network pool {cidr!r} must be an IPv4 network of /29 or larger")
        self.network: ipaddress.IPv4Network = network
        self.gateway: ipaddress.IPv4Address = network.network_address + 1
        self._first = int(network.network_address) + 2
        self._last = int(network.broadcast_address) - 1

    @property
    def size(self) -> int:
        """How many sandbox addresses the pool holds."""
        return self._last - self._first + 1

    def contains(self, address: str) -> bool:
        try:
            value = int(ipaddress.IPv4Address(address))
        except ValueError:
            return False
        return self._first <= value <= self._last

    def allocate(self, taken: Collection[str], after: str | None = None) -> str:
        """The first free address after ``after`` (wrapping); LimitExceeded when every
        address is taken. Each candidate is looked up in ``taken`` (O(1) probes from the
        cursor while the pool has room; ``taken`` is not parsed whole)."""
        start = int(ipaddress.IPv4Address(after)) + 1 if after and self.contains(after) else self._first
        for step in range(self.size):
            candidate = str(ipaddress.IPv4Address(self._first + (start - self._first + step) % self.size))
            if candidate not in taken:
                return candidate
        raise LimitExceeded(f"the address pool {self.network} is exhausted")
