"""Files inside a sandbox, resolved by its agent in the sandbox's own mount namespace.

Paths are absolute inside the sandbox; a relative path is taken from ``/root`` (the
home of the sandbox's user). No path or symlink reaches the host: the agent sees only
the sandbox's root.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import FileEntry
from corral.errors import InvalidInput
from corral.services.audit import AuditKind, clip
from corral.services.sandboxes import SandboxService

HOME = "/root"


def resolve(path: str | None, field: str = "path") -> str:
    """Normalise a client's path; InvalidInput for a missing or malformed one."""
    if not path:
        raise InvalidInput("path is required", field=field)
    if "\0" in path or len(path) > 4096:
        raise InvalidInput("path is malformed", field=field)
    return posixpath.normpath(posixpath.join(HOME, path))


class FileService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def read(
        self, principal: Principal, sandbox_id: str, path: str | None
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Open for streaming; NotFound / InvalidInput (a directory) before any byte."""
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.agent_for(principal, sandbox_id)
        return await agent.read_file(resolve(path))

    async def write(
        self, principal: Principal, sandbox_id: str, path: str | None, chunks: AsyncIterable[bytes]
    ) -> int:
        require(principal, Scope.SANDBOX_WRITE)
        target = resolve(path)
        if target == "/":
            raise InvalidInput("path must name a file", field="path")
        agent = await self.sandboxes.agent_for(principal, sandbox_id)
        size = await agent.write_file(target, chunks)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.FILE_WRITTEN, sandbox_id, path=clip(target), bytes=size
        )
        return size

    async def list(self, principal: Principal, sandbox_id: str, path: str | None) -> list[FileEntry]:
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.agent_for(principal, sandbox_id)
        return await agent.list_dir(resolve(path or "/"))

    async def stat(self, principal: Principal, sandbox_id: str, path: str | None) -> FileEntry | None:
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.agent_for(principal, sandbox_id)
        return await agent.stat(resolve(path))

    async def mkdir(self, principal: Principal, sandbox_id: str, path: str | None) -> None:
        require(principal, Scope.SANDBOX_WRITE)
        target = resolve(path)
        agent = await self.sandboxes.agent_for(principal, sandbox_id)
        await agent.mkdir(target)
        await self.sandboxes.audit.record_for(principal, AuditKind.DIR_CREATED, sandbox_id, path=clip(target))

    async def remove(self, principal: Principal, sandbox_id: str, path: str | None) -> None:
        require(principal, Scope.SANDBOX_WRITE)
        target = resolve(path)
        if target == "/":
            raise InvalidInput("refusing to remove /", field="path")
        agent = await self.sandboxes.agent_for(principal, sandbox_id)
        await agent.remove(target)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.FILE_REMOVED, sandbox_id, path=clip(target)
        )


async def chunks_of(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass non-empty chunks through (a request body may yield empty ones)."""
    async for chunk in stream:
        if chunk:
            yield chunk
