"""The ``Snapshotter`` port for the process runtime (tests, machines without runc).

**NO ISOLATION**, like ``ProcessRuntime`` itself, and no consistency guarantee: a
process sandbox's "disk" is its ``home/`` directory (the agent's working directory), so
only files written there (relative paths of commands, or absolute paths under it) are
snapshotted, restored, forked and kept across hibernation; everything else is the
host's own filesystem. Snapshots copy the tree with its metadata; nothing is frozen.
A snapshot dir holds ``home/``. Stopping and starting the agent on ``home/`` is the
runtime's (``ProcessRuntime.hibernate``, ``resume``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

from corral.errors import Conflict, InvalidInput, NotFound, RuntimeFailure
from corral.pausepoints import pause
from corral.runtime.layout import valid_id
from corral.runtime.process import HOME, ProcessRuntime, tree_size


class ProcessSnapshots:
    """See the module docstring. It shares the runtime's ``locks`` and state dir."""

    def __init__(self, runtime: ProcessRuntime) -> None:
        self._state_dir = runtime.state_dir
        self._locks = runtime.locks

    def _dir(self, sandbox_id: str) -> Path:
        if not valid_id(sandbox_id):
            raise InvalidInput(f"invalid sandbox id {sandbox_id!r}", field="id")
        return self._state_dir / sandbox_id

    async def snapshot(self, sandbox_id: str, target: Path) -> int:
        home = self._dir(sandbox_id) / HOME
        async with self._locks.of(sandbox_id):
            if not home.is_dir():
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            try:
                return await asyncio.to_thread(_copy, home, target / HOME)
            except OSError as exc:
                raise RuntimeFailure(f"snapshot of {sandbox_id}: {exc}") from exc

    async def restore(self, sandbox_id: str, source: Path) -> None:
        directory = self._dir(sandbox_id)
        home = directory / HOME
        staged = home.with_name("home.restore")
        async with self._locks.of(sandbox_id):
            if not home.is_dir():
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            if (directory / "agent.sock").exists():
                raise Conflict(f"sandbox {sandbox_id} is running; hibernate it first")
            try:
                await asyncio.to_thread(shutil.rmtree, staged, True)
                await asyncio.to_thread(_copy, source / HOME, staged)
                await asyncio.to_thread(_swap, staged, home)
            except OSError as exc:
                raise RuntimeFailure(f"restore of {sandbox_id}: {exc}") from exc

    async def fork(self, sandbox_id: str, source: Path) -> None:
        directory = self._dir(sandbox_id)
        async with self._locks.of(sandbox_id):
            try:
                directory.mkdir(parents=True)
            except FileExistsError:
                raise Conflict(f"sandbox {sandbox_id} already exists on this node") from None
            try:
                await asyncio.to_thread(_copy, source / HOME, directory / HOME)
                await pause("fork.copied")
            except BaseException as exc:
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, directory, True))
                if isinstance(exc, OSError):
                    raise RuntimeFailure(f"fork {sandbox_id}: {exc}") from exc
                raise

    async def has_disk(self, sandbox_id: str) -> bool:
        return (self._dir(sandbox_id) / HOME).is_dir()

    async def recover(self, sandbox_id: str) -> None:
        self._dir(sandbox_id)  # nothing is ever frozen here


def _copy(source: Path, target: Path) -> int:
    """The tree with its metadata, links as links; only regular files are copied (a FIFO,
    socket or device in it is left out, never opened)."""
    shutil.copytree(source, target, symlinks=True, copy_function=_copy_regular)
    return tree_size(target)


def _copy_regular(source: str, target: str) -> None:
    if stat.S_ISREG(os.lstat(source).st_mode):
        shutil.copy2(source, target, follow_symlinks=False)


def _swap(staged: Path, home: Path) -> None:
    old = home.with_name("home.old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(home, old)
    os.rename(staged, home)
    shutil.rmtree(old, ignore_errors=True)
