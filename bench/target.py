"""What the benchmark drives: one way of making sandboxes (corral, raw runc, podman)."""

from __future__ import annotations

from typing import Protocol

from memory import ContainerMemory


class Target(Protocol):
    """A system under test. ``create`` returns once a command can be run in the new
    sandbox; ``exec_true`` runs ``true`` in it and raises unless it exited 0; ``kill``
    removes it and everything it had. ``close`` removes everything this target made
    during the run and is safe to call twice."""

    name: str
    label: str  # a line for the report: what exactly was run

    async def setup(self) -> None: ...

    async def create(self) -> str: ...

    async def exec_true(self, sandbox_id: str) -> None: ...

    async def kill(self, sandbox_id: str) -> None: ...

    async def memory(self, sandbox_ids: list[str]) -> list[ContainerMemory]: ...

    async def close(self) -> None: ...
