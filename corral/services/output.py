"""The server's budget of command output held in memory.

``exec/run`` answers with a command's whole output, so the server holds it until the
answer is sent, and ``run-async`` results are kept for minutes. Without a bound, many
concurrent commands printing a lot take the server's memory (issue 9, item 10). Here:

- Each command keeps at most ``per_stream`` bytes of stdout and of stderr (the agent
  drops the rest at the source; the answer says ``truncated``).
- Each command's first ``floor`` bytes are always kept: small outputs never depend on
  what other tenants do.
- Beyond the floor, output is taken from one server-wide budget of ``total`` bytes.
  When the budget is spent, older finished ``run-async`` outputs are dropped first (the
  ``reclaimers``; their results keep their exit code and say ``truncated``); if that is
  not enough the command's further output is dropped and its answer says
  ``truncated``. Nothing waits: a command never stalls on another tenant's output.
- ``OutputHold.release`` gives a command's bytes back (once its answer is sent, or its
  cached result dropped); releasing is idempotent. A release of a large amount calls
  ``on_release`` (the server trims its C heap there, ``corral.heap``).

So the output held at once is at most ``total`` plus ``floor`` per command in flight.
"""

from __future__ import annotations

from collections.abc import Callable

RECLAIM_MIN = 1 << 20  # a release at least this large calls on_release


class OutputBudget:
    def __init__(
        self,
        total: int,
        per_stream: int,
        floor: int,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.total = total
        self.per_stream = per_stream
        self.floor = floor
        self.used = 0
        self.on_release = on_release
        self.reclaimers: list[Callable[[int], int]] = []  # (bytes needed) -> bytes released

    def hold(self) -> OutputHold:
        """A new command's share (``corral.ports.OutputKeeper``)."""
        return OutputHold(self)

    def _take(self, size: int) -> int:
        free = self.total - self.used
        if free < size:
            for reclaim in self.reclaimers:
                reclaim(size - free)
                free = self.total - self.used
                if free >= size:
                    break
        granted = max(0, min(size, free))
        self.used += granted
        return granted

    def _give(self, size: int) -> None:
        self.used -= size
        if size >= RECLAIM_MIN and self.on_release is not None:
            self.on_release()


class OutputHold:
    """One command's output: what it kept, and from the budget how much."""

    def __init__(self, budget: OutputBudget) -> None:
        self.budget = budget
        self.kept = 0
        self.borrowed = 0  # of ``kept``, taken from the budget

    @property
    def limit(self) -> int:
        return self.budget.per_stream

    def grant(self, size: int) -> int:
        free = min(size, max(0, self.budget.floor - self.kept))
        if free < size:
            taken = self.budget._take(size - free)
            self.borrowed += taken
            free += taken
        self.kept += free
        return free

    def release(self) -> None:
        borrowed, self.borrowed = self.borrowed, 0
        self.kept = 0
        if borrowed:
            self.budget._give(borrowed)
