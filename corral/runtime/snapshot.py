"""Snapshots of runc sandboxes' disks: the ``Snapshotter`` port.

A sandbox's writable layer lives on its own sparse ext4 image (``disk.py``), so every
operation is a file operation on that image; stopping and starting the container on it
is the runtime's (``RuncRuntime.hibernate``, ``resume``), which services call around
``restore`` and after ``fork``:

    snapshot   freeze the processes, syncfs (``freeze.py``), sparse-copy disk.img, thaw
    restore    (sandbox hibernated) copy the snapshot beside disk.img, rename it over
    fork       a new sandbox dir whose disk.img is a copy of the snapshot

A snapshot directory holds ``disk.img``: the image as the sandbox's filesystem was at
one instant (files, not processes: memory is never captured). Copies follow the image's
data extents (SEEK_DATA/SEEK_HOLE + copy_file_range), so they cost what the sandbox
wrote, not the size of its disk; the copy's unwritten blocks stay holes.

Every operation holds the sandbox's lock from the runtime's ``locks``, so it is ordered
with the runtime's create, destroy, hibernate and resume of the same sandbox.

What a crash (kill -9 of corral) leaves, and what start-up makes of it:
- in ``snapshot``: a frozen sandbox; ``recover`` (called for every sandbox at start-up,
  before its agent is pinged) thaws it. The half-written copy is in the caller's target
  dir, which the caller discards.
- in ``restore``: the old disk or (after the atomic rename) the new one, never a mix,
  and maybe the staged copy beside it (the next restore replaces it, destroy removes it).
- in ``fork``: a sandbox dir no store row owns; ``Runtime.reclaim`` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from corral.errors import Conflict, NotFound, RuntimeFailure
from corral.pausepoints import pause, pause_blocking
from corral.runtime import bundle, freeze
from corral.runtime.disk import sparse_copy
from corral.runtime.layout import SandboxPaths
from corral.runtime.runc import CGROUP_PARENT, RuncRuntime, allocated, has_run_state
from corral.settings import Settings

DISK = "disk.img"


class RuncSnapshots:
    """The ``Snapshotter`` port for ``RuncRuntime``'s sandboxes (see the module
    docstring). It shares the runtime's ``locks`` and nothing else of it."""

    def __init__(self, runtime: RuncRuntime, settings: Settings) -> None:
        self._locks = runtime.locks
        self._sandboxes = settings.sandboxes_dir
        self._data_dir = settings.data_dir
        self._group = settings.uid_base  # of the sandbox dirs (bundle.make_dirs)

    def _paths(self, sandbox_id: str) -> SandboxPaths:
        return SandboxPaths.of(self._sandboxes, sandbox_id)

    async def snapshot(self, sandbox_id: str, target: Path) -> int:
        paths = self._paths(sandbox_id)
        async with self._locks.of(paths.id):
            try:
                return await asyncio.to_thread(_capture, paths, target / DISK)
            except FileNotFoundError as exc:
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node") from exc
            except OSError as exc:
                raise RuntimeFailure(f"snapshot of {sandbox_id}: {exc}") from exc

    async def restore(self, sandbox_id: str, source: Path) -> None:
        paths = self._paths(sandbox_id)
        staged = paths.dir / f"{DISK}.restore"
        async with self._locks.of(paths.id):
            if not await asyncio.to_thread(paths.disk_image.exists):
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            if await asyncio.to_thread(has_run_state, paths):
                raise Conflict(f"sandbox {sandbox_id} is running; hibernate it first")
            try:
                await asyncio.to_thread(_stage, source / DISK, staged)
                await asyncio.to_thread(os.replace, staged, paths.disk_image)
            except OSError as exc:
                await asyncio.to_thread(_unlink, staged)
                raise RuntimeFailure(f"restore of {sandbox_id}: {exc}") from exc

    async def fork(self, sandbox_id: str, source: Path) -> None:
        paths = self._paths(sandbox_id)
        async with self._locks.of(paths.id):
            if await asyncio.to_thread(paths.dir.exists):
                raise Conflict(f"sandbox {sandbox_id} already exists on this node")
            try:
                await asyncio.to_thread(bundle.make_dirs, paths, self._data_dir, self._group)
                await asyncio.to_thread(sparse_copy, source / DISK, paths.disk_image)
                await pause("fork.copied")
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    await asyncio.shield(asyncio.to_thread(bundle.remove_tree, paths.dir))
                if isinstance(exc, OSError):
                    raise RuntimeFailure(f"fork {sandbox_id}: {exc}") from exc
                raise

    async def has_disk(self, sandbox_id: str) -> bool:
        return await asyncio.to_thread(self._paths(sandbox_id).disk_image.exists)

    async def recover(self, sandbox_id: str) -> None:
        paths = self._paths(sandbox_id)
        try:
            await asyncio.to_thread(freeze.thaw_all, CGROUP_PARENT, paths.id, paths.disk)
        except OSError as exc:
            raise RuntimeFailure(f"thaw {sandbox_id}: {exc}") from exc


def _capture(paths: SandboxPaths, target: Path) -> int:
    if not paths.disk_image.exists():
        raise FileNotFoundError(paths.disk_image)
    with freeze.frozen(CGROUP_PARENT, paths.id, paths.disk):
        pause_blocking("checkpoint.frozen")
        sparse_copy(paths.disk_image, target)
    return allocated(target)


def _stage(source: Path, staged: Path) -> None:
    _unlink(staged)
    sparse_copy(source, staged)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
