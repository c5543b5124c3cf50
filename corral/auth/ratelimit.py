"""Rate limits: an in-memory token bucket per (surface, caller).

A bucket holds ``limit`` tokens and refills at ``limit`` per minute; each request takes
one. The caller is the principal (``Principal.subject``: its key, user or org) once it
authenticated, or the client's address when it did not (no, malformed, revoked or
wrong credentials), so a burst of bad keys is limited like any other traffic and
cannot buy a fresh bucket per attempt. Buckets are per process: several control
planes behind a balancer each allow the limit.

Contracts: ``take`` never blocks; it returns a ``Verdict`` saying whether the request
may go on, how many requests are left, and (when refused) in how many whole seconds
one token will be back. A limit of 0 means unlimited. Memory stays bounded: buckets
that have been idle long enough to be full again are dropped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from corral.settings import Settings

WINDOW_S = 60.0
API, XGEN, RUNS = "api", "xgen", "runs"  # /api and worker routes; /api/v1; /api/sessions
ENCLAVE = "enclave"  # /sessions
COPASS = "copass"  # /api/v1/storage/sandboxes (Copass compute)
_SWEEP_EVERY = 4096  # takes between sweeps of idle buckets


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # 0 when allowed


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Buckets for several surfaces: ``limits`` maps a surface name to requests/minute."""

    def __init__(self, limits: Mapping[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = dict(limits)
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._takes = 0

    def limit_of(self, surface: str) -> int:
        return self.limits.get(surface, 0)

    def take(self, surface: str, caller: str) -> Verdict:
        limit = self.limit_of(surface)
        if limit <= 0:
            return Verdict(True, 0, 0, 0)
        now = self._clock()
        self._takes += 1
        if self._takes % _SWEEP_EVERY == 0:
            self._sweep(now)
        rate = limit / WINDOW_S
        bucket = self._buckets.get((surface, caller))
        if bucket is None:
            bucket = self._buckets[(surface, caller)] = _Bucket(float(limit), now)
        else:
            bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict(True, limit, int(bucket.tokens), 0)
        return Verdict(False, limit, 0, max(1, math.ceil((1.0 - bucket.tokens) / rate)))

    def _sweep(self, now: float) -> None:
        """Drop buckets idle for a whole window: they are full, as a new one would be."""
        for key, bucket in list(self._buckets.items()):
            if now - bucket.stamp >= WINDOW_S:
                del self._buckets[key]


def surface_limits(settings: Settings) -> dict[str, int]:
    """Requests a minute per principal, by surface name (the name a surface's auth passes)."""
    return {
        API: settings.rate_limit_api,
        XGEN: settings.rate_limit_xgen,
        RUNS: settings.rate_limit_runs,
        ENCLAVE: settings.rate_limit_enclave,
        COPASS: settings.rate_limit_copass,
    }
