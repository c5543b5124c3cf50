"""BuildahBuilder: templates from Dockerfiles (the ``Builder`` port), with buildah.

A build, in order (each step's leftovers removed whatever happens):

1. ``dockerfile.parse`` checks the text; its corral bases (``FROM base``, ``FROM
   python``, any template on this node) are imported into the builder's own storage
   (``<data>/builder/``), once per template build: ``buildah from scratch``, the root
   copied in with its ownership shifted back from the sandbox uid range to the ids
   inside, committed as ``localhost/corral-template/<name>:<digest16>``. Any other
   ``FROM`` is pulled from its registry, when the network reaches one.
2. ``buildah build`` runs the rewritten Dockerfile with an empty context (plus heredoc
   bodies) in a user namespace: its ``RUN`` steps are root inside, uid ``uid_base`` on
   the host, like a sandbox, never the host's root. Output goes to ``log`` line by line.
3. The image's root is copied out of a container of it into a ``.build-*`` dir of the
   catalog, its ownership put into the sandbox uid range (ids the build wrote are host
   ids of its user namespace already; ids from imported layers are shifted), checked for
   ``python3`` (the agent needs it), normalized like any template root, and published
   content-addressed with the image's ENV, WORKDIR and USER (``catalog.py``).

The digest is the sha256 of the Dockerfile text, the digests of its corral bases, the
uid range and ``BUILDER_VERSION``: the same text on the same bases is built once.
Registry bases are named, not pinned, so a rebuild of such a text reuses the first
build; change the text to rebuild.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from corral.domain import Template
from corral.errors import InvalidInput, RuntimeFailure
from corral.ports import Network
from corral.runtime import dockerfile, treework
from corral.runtime.catalog import TemplateCatalog
from corral.runtime.confinement import KILL_GRACE_S, NO_NEW_PRIVS, BuildConfinement, BuildLimits
from corral.runtime.ownership import ShiftReport, remap_tree
from corral.runtime.rootdir import NotConfined, RootDir
from corral.runtime.templates import normalize
from corral.settings import Settings

BUILDER_VERSION = 1
BUILD_TIMEOUT_S = 1800.0
STEP_TIMEOUT_S = 600.0
NOBODY = 65534  # what a sandbox sees for an id its user namespace does not map
LogFn = Callable[[str], None]


class BuildahBuilder:
    def __init__(
        self,
        settings: Settings,
        templates: TemplateCatalog,
        *,
        buildah: str = "buildah",
        network: Network | None = None,
    ) -> None:
        """``network``: where builds get their network (None: loopback only); see
        ``confinement.py`` for what a build's RUN steps get."""
        self._home = settings.data_dir / "builder"
        self._confinement = BuildConfinement(BuildLimits.of(settings), self._home, network)
        self._registries = tuple(settings.build_registries)
        self._base, self._count = settings.uid_base, settings.uid_count
        self._templates = templates
        self._buildah = buildah
        self._imports: dict[str, asyncio.Lock] = {}

    async def build(self, name: str, text: str, log: LogFn, usable: Mapping[str, str]) -> Template:
        """``usable``: the templates a ``FROM`` may name, as written -> their name in the
        catalog (the caller's own and the built-ins; any other ``FROM`` is a registry's)."""
        parsed = dockerfile.parse(text)
        bases = {b: await self._templates.get(usable[b]) for b in parsed.bases(frozenset(usable))}
        parsed.check_pulls(frozenset(bases), self._registries)
        digest = hashlib.sha256(
            json.dumps(
                {
                    "dockerfile": text,
                    "bases": {b: t.digest for b, t in bases.items()},
                    "uids": [self._base, self._count],
                    "builder": BUILDER_VERSION,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        existing = await self._templates.find(name, digest)
        if existing is not None:
            log(f"{name}: already built ({digest[:12]})")
            return existing
        images = {b: await self._import(t, log) for b, t in bases.items()}
        rendered, files = parsed.render(images)
        tag = f"localhost/corral-build/{name}:{digest[:16]}-{secrets.token_hex(4)}"

        async def fill(rootfs: Path) -> dict[str, Any]:
            return await self._build_into(rootfs, rendered, files, tag, log, bases)

        try:
            return await self._templates.adopt(name, digest, fill)
        finally:
            await self._quietly("rmi", "-f", tag)

    async def remove(self, name: str) -> None:
        await self._templates.remove_all(name)

    # -- the steps -------------------------------------------------------------------

    async def _import(self, template: Template, log: LogFn) -> str:
        ref = f"localhost/corral-template/{template.name}:{template.digest[:16]}"
        async with self._imports.setdefault(ref, asyncio.Lock()):
            if await self._quietly("inspect", "--type", "image", ref) == 0:
                return ref
            log(f"importing template {template.name} into the builder")
            container = f"corral-import-{secrets.token_hex(6)}"
            await self._check("from", "--pull=never", "--name", container, "scratch")
            try:
                mountpoint = Path((await self._check("mount", container)).strip())
                await self._copy_tree(Path(template.rootfs), mountpoint)
                await treework.shared().run_for(
                    f"import:{template.name}",
                    "importing the template's ownership",
                    BUILD_TIMEOUT_S,
                    functools.partial(_unshift, mountpoint, self._base, self._count),
                )
                await self._check("umount", container)
                await self._check("commit", "--quiet", container, ref)
            finally:
                await self._quietly("rm", container)
            return ref

    async def _build_into(
        self,
        rootfs: Path,
        text: str,
        files: dict[str, str],
        tag: str,
        log: LogFn,
        bases: dict[str, Template],
    ) -> dict[str, Any]:
        context = self._home / "contexts" / secrets.token_hex(8)
        try:
            await asyncio.to_thread(_write_context, context, text, files)
            idmap = f"0:{self._base}:{self._count}"
            limit = self._confinement.limits.timeout_s
            async with self._confinement.enter() as confined:
                try:
                    code, last = await self._stream(
                        ["build", "--layers=false", "--force-rm", "--pull=missing", "--format", "oci"]
                        + ["--userns-uid-map", idmap, "--userns-gid-map", idmap, *confined.flags]
                        + ["-f", str(context / "Dockerfile"), "-t", tag, str(context)],
                        log,
                        limit + KILL_GRACE_S,
                    )
                except TimeoutError as exc:  # buildah outlived the grace (a pull)
                    raise RuntimeFailure(f"the build took longer than {limit:g} s") from exc
                if confined.expired:  # its steps were killed
                    raise RuntimeFailure(f"the build took longer than {limit:g} s")
        finally:
            await asyncio.to_thread(shutil.rmtree, context, True)
        if code != 0:
            hint = ""
            if any(
                "creating build container" in line or "pinging container registry" in line for line in last
            ):
                hint = " (FROM names an image that is neither a template here nor pullable from a registry)"
            raise RuntimeFailure(f"the build failed{hint}: " + " | ".join(last[-8:]))
        config = (
            json.loads(await self._check("inspect", "--type", "image", tag))
            .get("OCIv1", {})
            .get("config", {})
        )
        container = f"corral-export-{secrets.token_hex(6)}"
        await self._check("from", "--pull=never", "--name", container, tag)
        try:
            mountpoint = Path((await self._check("mount", container)).strip())
            await self._copy_tree(mountpoint, rootfs)
        finally:
            await self._quietly("umount", container)
            await self._quietly("rm", container)
        log("shifting ownership into the sandbox uid range")
        report = await treework.shared().run_for(
            f"build:{rootfs.parent.name}",
            "making the image a template root",
            BUILD_TIMEOUT_S,
            functools.partial(_settle, rootfs, self._base, self._count, time.monotonic() + BUILD_TIMEOUT_S),
        )
        return {
            "source": "dockerfile",
            "size_bytes": report.size_bytes,
            "bases": {b: t.digest for b, t in bases.items()},
            "config": {
                "env": [list(item.split("=", 1)) for item in config.get("Env") or [] if "=" in item],
                "workdir": config.get("WorkingDir") or None,
                "user": config.get("User") or None,
            },
        }

    # -- buildah ---------------------------------------------------------------------

    def _argv(self, args: Sequence[str]) -> list[str]:
        storage = ["--root", str(self._home / "storage"), "--runroot", str(self._home / "run")]
        return [*NO_NEW_PRIVS, self._buildah, *storage, *args]

    async def _check(self, *args: str) -> str:
        proc = await self._spawn(args, asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), STEP_TIMEOUT_S)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode != 0:
            raise RuntimeFailure(f"buildah {args[0]}: {err.decode(errors='replace').strip()[-1500:]}")
        return out.decode(errors="replace")

    async def _quietly(self, *args: str) -> int:
        try:
            proc = await self._spawn(args, asyncio.subprocess.DEVNULL)
            return await asyncio.wait_for(proc.wait(), STEP_TIMEOUT_S)
        except (OSError, TimeoutError, RuntimeFailure):
            return -1

    async def _stream(self, args: list[str], log: LogFn, timeout: float) -> tuple[int, list[str]]:
        proc = await self._spawn(args, asyncio.subprocess.PIPE, merge=True)
        last: collections.deque[str] = collections.deque(maxlen=30)
        try:
            async with asyncio.timeout(timeout):
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    last.append(line)
                    log(line)
                return await proc.wait(), list(last)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise

    async def _spawn(
        self, args: Sequence[str], stdout: int, merge: bool = False
    ) -> asyncio.subprocess.Process:
        await asyncio.to_thread(self._home.mkdir, 0o700, True, True)
        try:
            return await asyncio.create_subprocess_exec(
                *self._argv(args),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=asyncio.subprocess.STDOUT if merge else asyncio.subprocess.PIPE,
                env={**os.environ, "LC_ALL": "C.UTF-8", "BUILDAH_ISOLATION": "oci"},
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self._buildah}: {exc}") from exc

    async def _copy_tree(self, source: Path, target: Path) -> None:
        """``cp -a`` (ownership, modes, times, links, xattrs): source's contents into
        target (made if missing)."""
        await asyncio.to_thread(target.mkdir, 0o755, False, True)
        proc = await asyncio.create_subprocess_exec(
            "cp",
            "-a",
            "--",
            f"{source}/.",
            f"{target}/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeFailure(f"copying {source}: {err.decode(errors='replace').strip()[-500:]}")


def _unshift(mountpoint: Path, base: int, count: int) -> None:
    """A template root copied into the builder, its ownership put back to the ids
    inside (an id outside the sandbox range becomes nobody's, as a sandbox sees it).
    Nothing in the root is followed."""
    try:
        remap_tree(mountpoint, lambda i: i - base if base <= i < base + count else NOBODY)
    except OSError as exc:
        raise RuntimeFailure(f"importing a template into the builder: {exc.strerror}") from exc


def _settle(rootfs: Path, base: int, count: int, deadline: float) -> ShiftReport:
    """The image's root, copied out, made a template root: ownership into the sandbox
    range (ids the build wrote are host ids of its user namespace already; ids from
    imported layers are shifted; any other becomes nobody's, as a sandbox would see
    it), ``python3`` checked, normalized. Nothing in the root is followed
    (``rootdir.py``). InvalidInput for an image corral cannot run (its /etc a link,
    no python3); RuntimeFailure otherwise."""
    try:
        report = remap_tree(
            rootfs,
            lambda i: base + i if i < count else (i if base <= i < base + count else base + NOBODY),
            deadline=deadline,
        )
    except TimeoutError as exc:
        raise RuntimeFailure("the image is too large: changing its ownership took too long") from exc
    except OSError as exc:
        raise RuntimeFailure(f"changing the image's ownership: {exc.strerror}") from exc
    with RootDir.open(rootfs) as root:
        if not any(_is_file(root, f"{d}/python3") for d in ("usr/bin", "usr/local/bin", "bin")):
            raise InvalidInput(
                "dockerfile: the image has no python3, which corral's agent needs", field="dockerfile"
            )
    try:
        normalize(rootfs)
    except (NotConfined, IsADirectoryError) as exc:
        inside = "/" + os.path.relpath(exc.filename, rootfs) if exc.filename else "/"
        raise InvalidInput(
            f"dockerfile: the image's {inside} is {exc.strerror}; a template's /etc, /opt and"
            " /opt/corral must be directories and /etc/hostname, hosts and resolv.conf files",
            field="dockerfile",
        ) from exc
    except OSError as exc:
        raise RuntimeFailure(f"preparing the image's /etc: {exc.strerror}") from exc
    return report


def _is_file(root: RootDir, relative: str) -> bool:
    """``relative`` is a regular file as the sandbox will see it (links followed inside)."""
    try:
        return stat.S_ISREG(root.resolve(relative).st_mode)
    except OSError:
        return False


def _write_context(context: Path, text: str, files: dict[str, str]) -> None:
    context.mkdir(mode=0o700, parents=True)
    (context / "Dockerfile").write_text(text)
    for relative, body in files.items():
        path = context / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        path.chmod(0o644)
