"""TemplateCatalog: the mmdebstrap templates plus templates built from Dockerfiles,
kept side by side in one content-addressed layout (``templates.py``).

A Dockerfile template is published exactly like a recipe's build: a ``.build-*`` dir
beside its destination, filled, given its ``template.json`` (with ``config``: the
image's ENV, WORKDIR and USER, and ``source: dockerfile``) and renamed into place under
the name's locks. ``TemplateStore.get`` already answers a name without a recipe with
its newest build, so sandboxes are created from Dockerfile templates like from any
other; ``find`` gives hibernated sandboxes and checkpoints the exact build they used.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.domain import Template
from corral.errors import Conflict, RuntimeFailure
from corral.runtime import mounts, treework
from corral.runtime.templates import TemplateStore

REMOVE_TIMEOUT_S = 1800.0
FillFn = Callable[[Path], Awaitable[dict[str, Any]]]


class TemplateCatalog(TemplateStore):
    """``TemplateStore`` that can also adopt roots built elsewhere (``builder.py``)."""

    def is_builtin(self, name: str) -> bool:
        return name in self._recipes

    async def adopt(self, name: str, digest: str, fill: FillFn) -> Template:
        """Publish build ``digest`` of ``name``: ``fill`` writes the root at the path it
        is given (not existing yet) and returns what template.json should say beyond
        name, digest and creation time. Concurrent adopts of one name run one at a time;
        one that finds ``digest`` built returns it without filling. On any failure the
        build dir is removed: nothing half-built stays. Conflict for a built-in name."""
        self._check_name(name)
        if name in self._recipes:
            raise Conflict(f"{name!r} is a built-in template", field="name")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock, self._file_lock(name):
            built = await asyncio.to_thread(self._load, name, digest)
            if built is not None:
                return built
            await asyncio.to_thread(self._remove_leftovers, name)
            work = self._dir / name / f".build-{digest[:16]}-{secrets.token_hex(4)}"
            try:
                await asyncio.to_thread(work.mkdir, 0o700)
                extra = await fill(work / "rootfs")
                await asyncio.to_thread(_write_meta, work, name, digest, extra)
                return await asyncio.to_thread(self._publish, work, name, digest)
            except BaseException:
                await asyncio.shield(_removing(name, work))
                raise

    async def remove_all(self, name: str) -> None:
        """Remove every build of a Dockerfile template. Conflict for a built-in name or
        while a running sandbox's root is mounted over one of them."""
        self._check_name(name)
        if name in self._recipes:
            raise Conflict(f"{name!r} is a built-in template and cannot be deleted", field="name")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock, self._file_lock(name):
            parent = self._dir / name
            if any(f"lowerdir={parent}/" in e.options for e in await asyncio.to_thread(mounts.table)):
                raise Conflict(f"template {name!r} is in use by a running sandbox")
            await _removing(name, parent)


async def _removing(name: str, path: Path) -> None:
    """``_remove`` on the tree pool (a Dockerfile template's root is its author's, of
    any size: never on the default executor)."""
    await treework.shared().run_for(
        f"template:{name}", "removing a template's files", REMOVE_TIMEOUT_S, functools.partial(_remove, path)
    )


def _write_meta(work: Path, name: str, digest: str, extra: dict[str, Any]) -> None:
    meta = {**extra, "name": name, "digest": digest, "created_at": datetime.now(UTC).isoformat()}
    path = work / "template.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    path.chmod(0o444)


def _remove(path: Path) -> None:
    if mounts.under(path):
        raise RuntimeFailure(f"{path} still has mounts; not removing it")
    if path.exists():
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)
