"""The ``Snapshotter`` port on the process runtime (tests, machines without runc).

**NO ISOLATION**, like ``ProcessRuntime`` itself, and no consistency guarantee: a
process sandbox's "disk" is its ``home/`` directory (the agent's working directory), so
only files written there (relative paths of commands, or absolute paths under it) are
snapshotted, restored, forked and kept across hibernation; everything else is the
host's own filesystem. Snapshots copy the tree with its metadata; nothing is frozen.
A snapshot dir holds ``home/``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

from corral.domain import SandboxSpec
from corral.errors import Conflict, NotFound, RuntimeFailure
from corral.pausepoints import pause
from corral.runtime.process import ProcessRuntime

HOME = "home"


class ProcessSnapshots:
    """See the module docstring. One asyncio lock per sandbox orders the operations."""

    def __init__(self, runtime: ProcessRuntime) -> None:
        self._rt = runtime
        self._locks: dict[str, asyncio.Lock] = {}

    def _home(self, sandbox_id: str) -> Path:
        return self._rt.state_dir / self._checked(sandbox_id) / HOME

    def _checked(self, sandbox_id: str) -> str:
        self._rt.agent(sandbox_id)  # InvalidInput for a bad id
        return sandbox_id

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    async def snapshot(self, sandbox_id: str, target: Path) -> int:
        home = self._home(sandbox_id)
        async with self._lock(sandbox_id):
            if not home.is_dir():
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            try:
                return await asyncio.to_thread(_copy, home, target / HOME)
            except OSError as exc:
                raise RuntimeFailure(f"snapshot of {sandbox_id}: {exc}") from exc

    async def hibernate(self, sandbox_id: str) -> int:
        home = self._home(sandbox_id)
        async with self._lock(sandbox_id):
            if not home.is_dir():
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            await self._rt.stop(sandbox_id)
            return await asyncio.to_thread(_size, home)

    async def resume(self, spec: SandboxSpec) -> None:
        async with self._lock(spec.id):
            if not self._home(spec.id).is_dir():
                raise NotFound(f"sandbox {spec.id} has no disk on this node")
            await self._rt.stop(spec.id)
            await self._rt.start_kept(spec)

    async def restore(self, spec: SandboxSpec, source: Path) -> None:
        home = self._home(spec.id)
        staged = home.with_name("home.restore")
        async with self._lock(spec.id):
            if not home.is_dir():
                raise NotFound(f"sandbox {spec.id} has no disk on this node")
            try:
                await asyncio.to_thread(shutil.rmtree, staged, True)
                await asyncio.to_thread(_copy, source / HOME, staged)
                await self._rt.stop(spec.id)
                await asyncio.to_thread(_swap, staged, home)
            except OSError as exc:
                raise RuntimeFailure(f"restore of {spec.id}: {exc}") from exc
            await self._rt.start_kept(spec)

    async def fork(self, spec: SandboxSpec, source: Path) -> None:
        home = self._home(spec.id)
        async with self._lock(spec.id):
            if home.parent.exists():
                raise Conflict(f"sandbox {spec.id} already exists on this node")
            try:
                home.parent.mkdir(parents=True)
                await asyncio.to_thread(_copy, source / HOME, home)
                await pause("fork.copied")
                await self._rt.start_kept(spec)
            except BaseException as exc:
                await asyncio.shield(self._rt.destroy(spec.id))
                if isinstance(exc, OSError):
                    raise RuntimeFailure(f"fork {spec.id}: {exc}") from exc
                raise

    async def has_disk(self, sandbox_id: str) -> bool:
        return self._home(sandbox_id).is_dir()

    async def recover(self, sandbox_id: str) -> None:
        self._checked(sandbox_id)  # nothing is ever frozen here


def _copy(source: Path, target: Path) -> int:
    """The tree with its metadata, links as links; only regular files are copied (a FIFO,
    socket or device in it is left out, never opened)."""
    shutil.copytree(source, target, symlinks=True, copy_function=_copy_regular)
    return _size(target)


def _copy_regular(source: str, target: str) -> None:
    if stat.S_ISREG(os.lstat(source).st_mode):
        shutil.copy2(source, target, follow_symlinks=False)


def _size(root: Path) -> int:
    total = 0
    for current, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(current, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def _swap(staged: Path, home: Path) -> None:
    old = home.with_name("home.old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(home, old)
    os.rename(staged, home)
    shutil.rmtree(old, ignore_errors=True)
