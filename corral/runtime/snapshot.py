"""Snapshots and hibernation of runc sandboxes: the ``Snapshotter`` port.

A sandbox's writable layer lives on its own sparse ext4 image (``disk.py``), so every
operation is a file operation on that image around a stop or start of the container:

    snapshot   freeze the processes, syncfs (``freeze.py``), sparse-copy disk.img, thaw
    hibernate  park: stop the container, unmount, free cgroups and network; keep disk.img
    resume     boot on the kept disk.img
    restore    copy the snapshot beside disk.img, park, rename it over disk.img, boot
    fork       a new sandbox dir whose disk.img is a copy of the snapshot, boot

A snapshot directory holds ``disk.img``: the image as the sandbox's filesystem was at
one instant (files, not processes: memory is never captured). Copies follow the image's
data extents (SEEK_DATA/SEEK_HOLE + copy_file_range), so they cost what the sandbox
wrote, not the size of its disk; the copy's unwritten blocks stay holes.

What a crash (kill -9 of corral) leaves, and what start-up makes of it:
- in ``snapshot``: a frozen sandbox; ``recover`` (called for every sandbox at start-up,
  before its agent is pinged) thaws it. The half-written copy is in the caller's target
  dir, which the caller discards.
- in ``hibernate``, ``restore``: the container stopped, maybe mounts left; the sandbox
  has its old disk or (after the atomic rename) the new one, never a mix. ``hibernate``
  (idempotent) finishes the job; the service records it hibernated.
- in ``fork``: a sandbox dir no store row owns; ``Runtime.reclaim`` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from corral.domain import SandboxSpec
from corral.errors import Conflict, NotFound, RuntimeFailure
from corral.pausepoints import pause, pause_blocking
from corral.runtime import bundle, freeze
from corral.runtime.disk import sparse_copy
from corral.runtime.layout import SandboxPaths
from corral.runtime.runc import CGROUP_PARENT, RuncRuntime
from corral.settings import Settings

DISK = "disk.img"


def allocated(path: Path) -> int:
    """Bytes a (sparse) file occupies on its filesystem."""
    return os.stat(path).st_blocks * 512


class RuncSnapshots:
    """The ``Snapshotter`` port on ``RuncRuntime`` (see the module docstring)."""

    def __init__(self, runtime: RuncRuntime, settings: Settings) -> None:
        self._rt = runtime
        self._data_dir = settings.data_dir
        self._group = settings.uid_base  # of the sandbox dirs (bundle.make_dirs)

    async def snapshot(self, sandbox_id: str, target: Path) -> int:
        paths = self._rt.paths(sandbox_id)
        async with self._rt.lock(sandbox_id):
            try:
                return await asyncio.to_thread(_capture, paths, target / DISK)
            except FileNotFoundError as exc:
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node") from exc
            except OSError as exc:
                raise RuntimeFailure(f"snapshot of {sandbox_id}: {exc}") from exc

    async def hibernate(self, sandbox_id: str) -> int:
        paths = self._rt.paths(sandbox_id)
        async with self._rt.lock(sandbox_id):
            if not await asyncio.to_thread(paths.disk_image.exists):
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            await self._rt.park(sandbox_id)
            return await asyncio.to_thread(allocated, paths.disk_image)

    async def resume(self, spec: SandboxSpec) -> None:
        paths = self._rt.paths(spec.id)
        async with self._rt.lock(spec.id):
            if not await asyncio.to_thread(paths.disk_image.exists):
                raise NotFound(f"sandbox {spec.id} has no disk on this node")
            if await asyncio.to_thread(_has_run_state, paths):
                await self._rt.park(spec.id)  # a crash in the middle of a stop
            await self._rt.boot(spec, forked=False)

    async def restore(self, spec: SandboxSpec, source: Path) -> None:
        paths = self._rt.paths(spec.id)
        staged = paths.dir / f"{DISK}.restore"
        async with self._rt.lock(spec.id):
            if not await asyncio.to_thread(paths.disk_image.exists):
                raise NotFound(f"sandbox {spec.id} has no disk on this node")
            try:
                await asyncio.to_thread(_stage, source / DISK, staged)  # while it still runs
            except OSError as exc:
                raise RuntimeFailure(f"restore of {spec.id}: {exc}") from exc
            try:
                await self._rt.park(spec.id)
                await asyncio.to_thread(os.replace, staged, paths.disk_image)
            except BaseException:
                await asyncio.to_thread(_unlink, staged)
                raise
            await self._rt.boot(spec, forked=False)

    async def fork(self, spec: SandboxSpec, source: Path) -> None:
        paths = self._rt.paths(spec.id)
        async with self._rt.lock(spec.id):
            if await asyncio.to_thread(paths.dir.exists):
                raise Conflict(f"sandbox {spec.id} already exists on this node")
            try:
                await asyncio.to_thread(bundle.make_dirs, paths, self._data_dir, self._group)
                await asyncio.to_thread(sparse_copy, source / DISK, paths.disk_image)
                await pause("fork.copied")
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    await asyncio.shield(asyncio.to_thread(bundle.remove_tree, paths.dir))
                if isinstance(exc, OSError):
                    raise RuntimeFailure(f"fork {spec.id}: {exc}") from exc
                raise
            await self._rt.boot(spec, forked=True)

    async def has_disk(self, sandbox_id: str) -> bool:
        return await asyncio.to_thread(self._rt.paths(sandbox_id).disk_image.exists)

    async def recover(self, sandbox_id: str) -> None:
        paths = self._rt.paths(sandbox_id)
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


def _has_run_state(paths: SandboxPaths) -> bool:
    return paths.config.exists() or os.path.ismount(paths.disk) or os.path.ismount(paths.rootfs)
