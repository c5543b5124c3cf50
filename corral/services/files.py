"""Files inside a sandbox, resolved by its agent in the sandbox's own mount namespace.

Paths are absolute inside the sandbox; a relative path is taken from ``/root`` (the
home of the sandbox's user). No path or symlink reaches the host: the agent sees only
the sandbox's root.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import FileEntry
from corral.errors import InvalidInput
from corral.ports import FileChunks
from corral.services.audit import AuditKind, clip
from corral.services.sandboxes import SandboxService

HOME = "/root"
LIST_PAGE = 10_000
"""Entries of one page of a directory listing, at most (and by default)."""


def resolve(path: str | None, field: str = "path") -> str:
    """Normalise a client's path; InvalidInput for a missing or malformed one."""
    if not path:
        raise InvalidInput("path is required", field=field)
    if "\0" in path or len(path) > 4096:
        raise InvalidInput("path is malformed", field=field)
    return posixpath.normpath(posixpath.join(HOME, path))


def cursor_of(name: str) -> str:
    """The opaque cursor after the entry ``name`` (base64url of its bytes)."""
    return base64.urlsafe_b64encode(name.encode("utf-8", "surrogateescape")).decode().rstrip("=")


def name_of(cursor: str) -> str:
    """The entry name a cursor stands for; InvalidInput for one corral did not make."""
    try:
        if len(cursor) > 2048:
            raise ValueError("too long")
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except ValueError:
        raise InvalidInput("cursor is malformed", field="cursor") from None
    return raw.decode("utf-8", "surrogateescape")


@contextmanager
def about_path(field: str = "path") -> Iterator[None]:
    """The agent's InvalidInput (not a regular file, is a directory, not a directory)
    is about the path it was given: it names the request's ``field``."""
    try:
        yield
    except InvalidInput as exc:
        if exc.field is None:
            exc.field = field
        raise


class FileService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def read(
        self, principal: Principal, sandbox_id: str, path: str | None
    ) -> AbstractAsyncContextManager[FileChunks]:
        """Open for streaming; NotFound / InvalidInput (a directory, not a regular file)
        before any byte."""
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        with about_path():
            return await agent.read_file(resolve(path))

    async def write(
        self,
        principal: Principal,
        sandbox_id: str,
        path: str | None,
        chunks: AsyncIterable[bytes],
        *,
        owner: int | None = None,
    ) -> int:
        """Stream a file in (``Files.write_file``); ``owner``: the uid (and gid) that owns it
        and the directories made for it (None: root)."""
        require(principal, Scope.SANDBOX_WRITE)
        target = resolve(path)
        if target == "/":
            raise InvalidInput("path must name a file", field="path")
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        with about_path():
            size = await agent.write_file(target, chunks, owner=owner)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.FILE_WRITTEN, sandbox_id, path=clip(target), bytes=size
        )
        return size

    async def list(
        self,
        principal: Principal,
        sandbox_id: str,
        path: str | None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[FileEntry], str | None]:
        """One page of a directory in name order: at most ``limit`` entries (default and
        most LIST_PAGE) after ``cursor``, and the cursor of the rest (None: no rest)."""
        require(principal, Scope.SANDBOX_READ)
        if limit is None:
            limit = LIST_PAGE
        elif not 1 <= limit <= LIST_PAGE:
            raise InvalidInput(f"limit must be between 1 and {LIST_PAGE}", field="limit")
        after = name_of(cursor) if cursor else None
        target = resolve(path or "/")
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        entries: list[FileEntry] = []
        with about_path():
            while True:  # one answer of the agent holds ~8,000 entries: fill the page
                page = await agent.list_dir(target, after, limit - len(entries))
                entries += page.entries
                after = page.next
                if after is None or len(entries) >= limit:
                    break
        return entries, None if after is None else cursor_of(after)

    async def stat(self, principal: Principal, sandbox_id: str, path: str | None) -> FileEntry | None:
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        return await agent.stat(resolve(path))

    async def mkdir(self, principal: Principal, sandbox_id: str, path: str | None) -> None:
        require(principal, Scope.SANDBOX_WRITE)
        target = resolve(path)
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        with about_path():
            await agent.mkdir(target)
        await self.sandboxes.audit.record_for(principal, AuditKind.DIR_CREATED, sandbox_id, path=clip(target))

    async def remove(self, principal: Principal, sandbox_id: str, path: str | None) -> None:
        require(principal, Scope.SANDBOX_WRITE)
        target = resolve(path)
        if target == "/":
            raise InvalidInput("refusing to remove /", field="path")
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        with about_path():
            await agent.remove(target)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.FILE_REMOVED, sandbox_id, path=clip(target)
        )


async def chunks_of(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass non-empty chunks through (a request body may yield empty ones)."""
    async for chunk in stream:
        if chunk:
            yield chunk
