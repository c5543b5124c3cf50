"""A ``Snapshotter`` for runtimes that cannot snapshot: every operation is Unavailable
and no sandbox has a kept disk (so idle sandboxes are stopped, not hibernated)."""

from __future__ import annotations

from pathlib import Path

from corral.errors import Unavailable

_WHY = "this node's runtime cannot snapshot sandboxes (checkpoints, forks, hibernation)"


class NoSnapshots:
    async def snapshot(self, sandbox_id: str, target: Path) -> int:
        raise Unavailable(_WHY)

    async def restore(self, sandbox_id: str, source: Path) -> None:
        raise Unavailable(_WHY)

    async def fork(self, sandbox_id: str, source: Path) -> None:
        raise Unavailable(_WHY)

    async def has_disk(self, sandbox_id: str) -> bool:
        return False

    async def recover(self, sandbox_id: str) -> None:
        return None
