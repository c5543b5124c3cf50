"""A clock a test moves by hand (``corral.clock.Clock``): time passes only when the
test says so, so an idle timeout or a deadline is tested without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """Starts at the real wall time (stored rows and the fake agree on "now") and a
    monotonic reading of 1000; ``advance`` moves both."""

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime.now(UTC)
        self._mono = 1000.0

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Moves time forward by ``seconds`` (not backward: a monotonic clock)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds
        self._wall += timedelta(seconds=seconds)
