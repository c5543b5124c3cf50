"""Where checkpoints live on disk, and the format of one.

```
<data>/checkpoints/                 0700
    .staging-<cp-id>/               a checkpoint being made (or a crash's leftover)
    <cp-id>/                        a finished one, renamed into place
        checkpoint.json             0400  the metadata below
        disk.img | home/            the disk layer, as the runtime wrote it
```

``checkpoint.json``::

    {"format": 1, "id": "cp-...", "sandboxId": "sb-...", "orgId": "...", "name": "...",
     "createdAt": "<ISO 8601>", "config": {template, templateDigest, limits, envs,
     egress, metadata}, "layers": {"disk": {"runtime": "runc", "sizeBytes": n},
     "memory": null}}

``format`` is bumped on any incompatible change. ``layers.memory`` is reserved for a
process-memory layer (CRIU, when a kernel supports it); ``null`` means running
processes were not captured, which is the case for every checkpoint today.

A checkpoint is durable once ``commit`` returns: every file, the metadata and both
directories are fsynced before and after the rename. The directory and the metadata
hold the sandbox's envs: 0700 and 0400, root only. Blocking work runs on threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from corral.domain import Checkpoint
from corral.domain.config_json import config_json

FORMAT = 1
METADATA = "checkpoint.json"
STAGING = ".staging-"
_ID = re.compile(r"cp-[a-z0-9]{8,32}")


class CheckpointDirs:
    """The ``CheckpointFiles`` port on a directory of the data dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _checked(self, checkpoint_id: str) -> str:
        if not _ID.fullmatch(checkpoint_id):
            raise ValueError(f"not a checkpoint id: {checkpoint_id!r}")
        return checkpoint_id

    def path(self, checkpoint_id: str) -> Path:
        """The finished checkpoint's directory (it may not exist)."""
        return self.root / self._checked(checkpoint_id)

    def staging(self, checkpoint_id: str) -> Path:
        return self.root / (STAGING + self._checked(checkpoint_id))

    async def stage(self, checkpoint_id: str) -> Path:
        """A new, empty staging directory for the checkpoint. Raises OSError."""
        staging = self.staging(checkpoint_id)
        await asyncio.to_thread(_fresh_dir, self.root, staging)
        return staging

    async def commit(self, checkpoint: Checkpoint, runtime: str) -> None:
        """Write checkpoint.json, make everything durable, rename the staging directory
        into place. Raises OSError."""
        metadata = {
            "id": checkpoint.id,
            "sandboxId": checkpoint.sandbox_id,
            "orgId": checkpoint.org_id,
            "name": checkpoint.name,
            "createdAt": checkpoint.created_at.isoformat(),
            "config": config_json(checkpoint.config),
            "layers": {"disk": {"runtime": runtime, "sizeBytes": checkpoint.size_bytes}, "memory": None},
        }
        staging, final = self.staging(checkpoint.id), self.path(checkpoint.id)
        await asyncio.to_thread(_commit, staging, final, metadata)

    async def exists(self, checkpoint_id: str) -> bool:
        return await asyncio.to_thread((self.path(checkpoint_id) / METADATA).is_file)

    async def discard(self, checkpoint_id: str) -> None:
        """Remove the checkpoint's files, staged or finished; idempotent."""
        for path in (self.staging(checkpoint_id), self.path(checkpoint_id)):
            await asyncio.to_thread(shutil.rmtree, path, True)

    async def sweep(self, keep: set[str]) -> list[str]:
        """Remove every staging directory and every checkpoint not in ``keep``; return
        the ids removed."""
        return await asyncio.to_thread(_sweep, self.root, keep)


def _fresh_dir(root: Path, path: Path) -> None:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)


def _commit(staging: Path, final: Path, metadata: dict[str, Any]) -> None:
    for current, _dirs, files in os.walk(staging):
        for name in files:
            path = Path(current) / name
            if path.is_file() and not path.is_symlink():
                _fsync_file(path)
    meta = staging / METADATA
    fd = os.open(meta, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    with os.fdopen(fd, "w") as f:
        json.dump({"format": FORMAT, **metadata}, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(staging)
    os.rename(staging, final)
    _fsync_dir(final.parent)


def _fsync_file(path: Path) -> None:
    """fsync a file of a staging dir (the walk keeps regular files only; O_NONBLOCK too, so
    nothing else put there could hold the thread)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep(root: Path, keep: set[str]) -> list[str]:
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            name = entry.name.removeprefix(STAGING)
            if entry.name.startswith(STAGING) or (_ID.fullmatch(name) and name not in keep):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(name)
    return sorted(removed)
