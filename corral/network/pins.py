"""What one sandbox was told by the resolver, and which of those addresses are pinned
in the firewall for it (elements of the shared ``pin`` set for allowed names, of
``block`` for denied ones, keyed by the sandbox's address).

Pin lifetime: an answer with TTL ``t`` must stay usable for at least ``t`` seconds
(clients cache it that long), so its addresses are pinned until at least
``now + max(t, MIN_PIN)``. To spare the firewall a transaction per query, a pin is
written for twice that and rewritten only when less than the required time is left:
repeated lookups of a popular name cost no ``nft`` call. A pin never shrinks (an
address shared by two names keeps the longer one).

Pure bookkeeping (no I/O): the node serialises access with the sandbox's lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

MIN_PIN = 60
MAX_PIN = 7 * 24 * 3600
MAX_ADDRESSES = 4096  # addresses remembered per sandbox (least recently told dropped)


class PinBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._names: OrderedDict[str, set[str]] = OrderedDict()  # address -> names
        self._pins: dict[str, float] = {}  # address -> when its firewall pin expires

    def record(self, name: str, addresses: Sequence[tuple[str, int]]) -> None:
        """Remember that ``name`` resolved to ``addresses``."""
        for address, _ttl in addresses:
            names = self._names.pop(address, set())
            names.add(name)
            self._names[address] = names
        while len(self._names) > MAX_ADDRESSES:
            address, _ = self._names.popitem(last=False)
            self._pins.pop(address, None)

    def name_of(self, address: str) -> str | None:
        names = self._names.get(address)
        return min(names) if names else None

    def due(self, addresses: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        """The (address, timeout) pairs to write now so that every address stays
        pinned for its TTL; marks them as written."""
        now = self._clock()
        out = []
        for address, ttl in addresses:
            need = min(max(ttl, MIN_PIN), MAX_PIN)
            if self._pins.get(address, 0.0) >= now + need + 1:
                continue
            timeout = min(2 * need, MAX_PIN)
            self._pins[address] = now + timeout
            out.append((address, timeout))
        return out

    def keep(self, wanted: Callable[[str], bool]) -> list[tuple[str, int]]:
        """For a new policy: the pins (address, seconds left) whose address some name
        ``wanted`` accepts still resolved to; every other pin is forgotten."""
        now = self._clock()
        kept: dict[str, float] = {}
        for address, expires in self._pins.items():
            if expires - now >= 1 and any(wanted(n) for n in self._names.get(address, ())):
                kept[address] = expires
        self._pins = kept
        return [(address, int(expires - now)) for address, expires in kept.items()]

    def clear(self) -> None:
        self._pins.clear()

    def __len__(self) -> int:
        return len(self._pins)
