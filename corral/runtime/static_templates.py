"""A ``Templates`` fake for runtimes that ignore the root filesystem (the process
runtime): every known name is 'built' at once, rooted at ``/``."""

from __future__ import annotations

from datetime import UTC, datetime

from corral.domain import Template
from corral.errors import NotFound
from corral.ports import ProgressFn


class StaticTemplates:
    def __init__(self, names: tuple[str, ...] = ("base", "python", "nodejs")) -> None:
        self.names = names
        self.created_at = datetime.now(UTC)

    def known(self) -> list[str]:
        return list(self.names)

    async def get(self, name: str) -> Template:
        if name not in self.names:
            raise NotFound(f"template {name!r} not found", field="templateID")
        return Template(name, "static", "/", self.created_at)

    async def build(self, name: str, progress: ProgressFn | None = None, force: bool = False) -> Template:
        if progress:
            progress(f"{name}: nothing to build", 1.0)
        return await self.get(name)

    async def list(self) -> list[Template]:
        return [await self.get(n) for n in self.names]

    async def find(self, name: str, digest: str) -> Template | None:
        return await self.get(name) if name in self.names and digest == "static" else None
