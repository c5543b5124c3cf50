"""What the sandboxes' resolver lets each client, each org and the node have at once.

The resolver is shared by every sandbox of the node, so one tenant must not be able to
take it from the others (issue 9, item 6). Each query is admitted twice:

* when it arrives (:meth:`Quota.enter`), per client address (one address is one
  sandbox): a token bucket (``rate`` a second, ``burst`` at once) and at most
  ``outstanding`` queries being answered at once. Beyond either, the resolver refuses
  at once (REFUSED); nothing waits in a queue.
* when it needs the upstream servers (:meth:`Ticket.upstream`), per org: at most
  ``org_outstanding`` of the org's queries at the upstream at once, and the node's
  pool of ``total``. The last ``reserve`` slots of the pool only go to orgs with fewer
  than ``outstanding`` queries at the upstream (less than one sandbox's worth), so a
  full pool still has room for a tenant within its limits: to take the reserve too,
  ``reserve / outstanding`` orgs must each be flooding at once.

Contract: every count taken is given back by :meth:`Ticket.close` (idempotent); counts
never go below zero; the table of buckets is bounded (idle buckets are forgotten).
Single-threaded (the event loop); nothing here awaits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

MAX_BUCKETS = 4096  # above this, buckets that are full again are forgotten


@dataclass(frozen=True)
class QuotaLimits:
    """The bounds (see the module docstring); every one is at least 1 but ``reserve``
    (0 or more, less than ``total``)."""

    outstanding: int = 32  # per sandbox: queries being answered at once
    rate: float = 100.0  # per sandbox: queries a second, on average
    burst: int = 200  # per sandbox: queries at once after a quiet spell
    org_outstanding: int = 128  # per org: queries at the upstream servers at once
    total: int = 512  # for the node: queries at the upstream servers at once
    reserve: int = 128  # of total: only for orgs with fewer than `outstanding` upstream

    def __post_init__(self) -> None:
        if min(self.outstanding, self.burst, self.org_outstanding, self.total) < 1 or self.rate <= 0:
            raise ValueError("DNS limits must be positive")
        if not 0 <= self.reserve < self.total:
            raise ValueError("the DNS reserve must be at least 0 and less than the total")


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class Quota:
    """The counts; see the module docstring. ``clock`` is for tests."""

    def __init__(self, limits: QuotaLimits | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.limits = limits or QuotaLimits()
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._clients: dict[str, int] = {}  # queries being answered, per client address
        self._orgs: dict[str, int] = {}  # queries at the upstream, per org
        self.upstream_total = 0

    def enter(self, client: str) -> Ticket | None:
        """A ticket for one query of ``client``, or None when it is over its rate or
        has ``outstanding`` queries being answered already."""
        if self._clients.get(client, 0) >= self.limits.outstanding or not self._spend(client):
            return None
        self._clients[client] = self._clients.get(client, 0) + 1
        return Ticket(self, client)

    def ticket(self) -> Ticket:
        """A ticket for the node's own query (no client, no rate): it only counts at
        the upstream, for the org it names there."""
        return Ticket(self, None)

    def outstanding(self, client: str) -> int:
        return self._clients.get(client, 0)

    def at_upstream(self, org: str) -> int:
        return self._orgs.get(org, 0)

    def _spend(self, client: str) -> bool:
        now = self._clock()
        limits = self.limits
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[client] = _Bucket(float(limits.burst), now)
        else:
            bucket.tokens = min(float(limits.burst), bucket.tokens + (now - bucket.stamp) * limits.rate)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        limits = self.limits
        for client, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * limits.rate >= limits.burst:
                del self._buckets[client]

    def _take_upstream(self, org: str) -> bool:
        limits = self.limits
        held = self._orgs.get(org, 0)
        if held >= limits.org_outstanding or self.upstream_total >= limits.total:
            return False
        if self.upstream_total >= limits.total - limits.reserve and held >= limits.outstanding:
            return False  # the reserve is for tenants within one sandbox's worth
        self._orgs[org] = held + 1
        self.upstream_total += 1
        return True

    def _give_upstream(self, org: str) -> None:
        self.upstream_total = max(0, self.upstream_total - 1)
        _decrement(self._orgs, org)

    def _leave(self, client: str) -> None:
        _decrement(self._clients, client)


class Ticket:
    """One admitted query: what it holds until :meth:`close`."""

    def __init__(self, quota: Quota, client: str | None) -> None:
        self._quota = quota
        self._client = client
        self._org: str | None = None

    def upstream(self, org: str) -> bool:
        """Take a slot at the upstream servers for ``org`` (once; True again if held)."""
        if self._org is not None:
            return True
        if not self._quota._take_upstream(org):
            return False
        self._org = org
        return True

    def close(self) -> None:
        if self._org is not None:
            self._quota._give_upstream(self._org)
            self._org = None
        if self._client is not None:
            self._quota._leave(self._client)
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left <= 0:
        counts.pop(key, None)
    else:
        counts[key] = left
