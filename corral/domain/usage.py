"""What a sandbox has used of its resources, and which of its limits it hit.

The runtime reads it on the host, from the kernel's own counters of the sandbox's
cgroups (``Runtime.usage``), never from anything the sandbox reports; the counters run
from the sandbox's start (a restart of its processes by a wake starts them again).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """One reading of a sandbox's counters.

    ``cpu_seconds``: CPU time used by all its processes (user and system).
    ``oom_kills``: processes the OOM killer of its memory limit killed.
    ``pids_refused``: forks (and clones of threads) its pids limit refused.
    ``memory_peak_bytes``: the most memory it held at once (None where the kernel does
    not say); ``memory_bytes``: what it holds now (None alike). ``cpu_quota_seconds``:
    its CPU-time quota (``Limits.cpu_seconds``; None:
    none), after which the runtime stops the sandbox.
    """

    cpu_seconds: float
    oom_kills: int = 0
    pids_refused: int = 0
    memory_peak_bytes: int | None = None
    memory_bytes: int | None = None
    cpu_quota_seconds: float | None = None

    @property
    def cpu_exceeded(self) -> bool:
        """It used its whole CPU-time quota (and was stopped for it)."""
        return self.cpu_quota_seconds is not None and self.cpu_seconds >= self.cpu_quota_seconds

    @property
    def memory_exceeded(self) -> bool:
        """The OOM killer killed one of its processes at its memory limit."""
        return self.oom_kills > 0

    @property
    def pids_exceeded(self) -> bool:
        """A fork was refused at its pids limit."""
        return self.pids_refused > 0
