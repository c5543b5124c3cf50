"""TemplateStore: content-addressed, read-only root filesystems built with mmdebstrap.

A template is a recipe (suite, variant, packages, paths to drop, recipe version); its
digest is the sha256 of that recipe plus the uid range it is owned by, so changing any
of them makes a new template and never rewrites an old one. Layout::

    <data>/templates/<name>/.lock                 flock: one builder per name across processes
    <data>/templates/<name>/<digest>/             0555 once published
        rootfs/                                   the root, owned by uid_base.. (see ownership.py)
        template.json                             name, digest, created_at, size_bytes, recipe
    <data>/templates/<name>/.build-<digest>-<rnd>/    a build in progress (or its leftovers)
    <data>/templates/<name>/.retired-<rnd>/           replaced by a forced rebuild

A build runs mmdebstrap into a ``.build-*`` dir beside its destination, normalizes a
few files (/etc/hostname, /etc/hosts and /etc/resolv.conf are per sandbox; the agent's
mount point exists), shifts ownership into the user-namespace range and renames the
dir into place: a half-built tree never looks built. Leftovers of interrupted builds
are removed (after unmounting anything mmdebstrap left mounted in them) by the next
build of that name. Retired trees are removed once no overlay uses that name.

Concurrency: an asyncio lock per name in-process plus an flock per name across
processes; whoever waits finds the finished template and does not build again.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from corral.domain import ImageConfig, Template
from corral.errors import InvalidInput, NotFound, RuntimeFailure
from corral.ports import ProgressFn
from corral.runtime import mounts
from corral.runtime.ownership import shift_tree
from corral.runtime.rootdir import RootDir
from corral.settings import Settings

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
LOADED_KEPT = 256  # templates whose template.json stays parsed (``TemplateStore._loaded``)
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
BASE_PACKAGES = (
    *("python3", "bash", "coreutils", "procps", "ca-certificates", "passwd"),
    *("curl", "wget", "git", "build-essential", "vim", "jq", "unzip"),
)
# Every template has the user xgen's commands run as, and their working directory.
SANDBOX_USER = (
    'chroot "$1" useradd --create-home --uid 1000 --user-group --shell /bin/bash sandbox',
    'chroot "$1" install -d -o sandbox -g sandbox /home/sandbox/workspace',
)
# The desktop (services/desktop.py starts it): an X server, a window manager, a VNC
# server and noVNC in front of it, Chromium, and xdotool to drive it all.
DESKTOP_PACKAGES = (
    *("xvfb", "xauth", "xfonts-base", "fonts-dejavu-core", "fluxbox", "xterm", "xdotool"),
    *("x11vnc", "novnc", "websockify", "chromium"),
    "hsetroot",  # a wallpaper setter for fluxbox's fbsetbg (without one it opens an xmessage)
)
NOVNC_INDEX = (
    '<!doctype html><meta http-equiv="refresh"'
    ' content="0; url=vnc.html?autoconnect=true&amp;resize=scale&amp;reconnect=true">'
)
DESKTOP_HOOKS = (
    # noVNC's page, connected to the desktop, at the root of its preview URL
    f"echo '{NOVNC_INDEX}' > \"$1/usr/share/novnc/index.html\"",
    # Chromium's own sandbox needs user namespaces, which a sandbox may not make
    'echo \'export CHROMIUM_FLAGS="$CHROMIUM_FLAGS --no-sandbox"\' > "$1/etc/chromium.d/corral"',
)
# The code interpreter: Jupyter kernels for Python (with the usual data packages) and R,
# and what its server (agent/interpreter.py, laid in by INTERPRETER_FILES) runs on;
# services/interpreter.py starts it.
INTERPRETER_PACKAGES = (
    *("python3-ipykernel", "python3-jupyter-client", "python3-aiohttp", "python3-pip"),
    *("python3-matplotlib", "python3-pandas", "python3-numpy", "r-cran-irkernel"),
)
INTERPRETER_SERVER = Path(__file__).resolve().parent.parent / "agent" / "interpreter.py"
INTERPRETER_FILES = (("usr/local/lib/corral/interpreter.py", INTERPRETER_SERVER.read_text()),)
# The agent: the Claude Agent SDK from PyPI (its wheel ships the Claude Code CLI) and
# the runner of agent sessions (agent/claude_runner.py; services/agent_sessions.py
# starts it). The version is pinned: a new one is a new template.
AGENT_SDK = "claude-agent-sdk==0.2.190"
AGENT_RUNNER = Path(__file__).resolve().parent.parent / "agent" / "claude_runner.py"
AGENT_FILES = (("usr/local/lib/corral/claude_runner.py", AGENT_RUNNER.read_text()),)
# Wheels a recipe's ``pip`` names are downloaded on the host into the build's work dir
# (beside the root, never in it), copied in by mmdebstrap (its copy-in hook: nothing in
# the root is followed from the host), installed by the root's own pip, and removed.
WHEELS_IN_ROOT = "/tmp/corral-wheels"
# Sandboxes are for installing things: let pip install without --break-system-packages.
PIP_UNLOCK = ("usr/lib/python3*/EXTERNALLY-MANAGED",)
DEFAULT_MIRRORS = (
    "deb http://deb.debian.org/debian {suite} main",
    "deb http://deb.debian.org/debian {suite}-updates main",
    "deb http://deb.debian.org/debian-security {suite}-security main",
)
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# mmdebstrap's "I: ..." phase lines, and how far along a build is when each appears.
PHASES = (
    ("running apt-get update", 0.02, "updating package lists"),
    ("downloading packages", 0.08, "downloading packages"),
    ("extracting archives", 0.25, "extracting packages"),
    ("installing essential packages", 0.45, "installing essential packages"),
    ("installing remaining packages", 0.65, "installing packages"),
    ("cleaning package lists", 0.93, "cleaning up"),
    ("success", 0.95, "root filesystem built"),
)


@dataclass(frozen=True)
class Recipe:
    """What a template is made of. Everything here goes into the digest."""

    packages: tuple[str, ...]
    suite: str = "bookworm"
    variant: str = "minbase"
    remove: tuple[str, ...] = PIP_UNLOCK  # globs relative to the root, deleted after the build
    hooks: tuple[str, ...] = ()  # shell commands run after the packages, the root as $1
    files: tuple[tuple[str, str], ...] = ()  # (path in the root, text): laid in last, root's, 0644
    pip: tuple[str, ...] = ()  # requirements installed from PyPI wheels (see WHEELS_IN_ROOT)
    version: int = RECIPE_VERSION

    def digest(self, uid_base: int, uid_count: int) -> str:
        document = {
            **asdict(self),
            "packages": sorted(set(self.packages)),
            "dpkg": DPKG_OPTIONS,
            "uid_base": uid_base,
            "uid_count": uid_count,
        }
        if not self.files:  # the digests of recipes without files stay what they were
            del document["files"]
        if not self.pip:  # nor those without wheels
            del document["pip"]
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


RECIPES: Mapping[str, Recipe] = {
    "base": Recipe(BASE_PACKAGES, hooks=SANDBOX_USER),
    "python": Recipe((*BASE_PACKAGES, "python3-pip", "python3-venv"), hooks=SANDBOX_USER),
    "nodejs": Recipe((*BASE_PACKAGES, "nodejs", "npm"), hooks=SANDBOX_USER),
    "go": Recipe((*BASE_PACKAGES, "golang"), hooks=SANDBOX_USER),
    "gui": Recipe((*BASE_PACKAGES, *DESKTOP_PACKAGES), hooks=(*SANDBOX_USER, *DESKTOP_HOOKS)),
    "agent": Recipe(
        (*BASE_PACKAGES, "python3-pip", "python3-venv"),
        hooks=SANDBOX_USER,
        files=AGENT_FILES,
        pip=(AGENT_SDK,),
    ),
    "code-interpreter": Recipe(
        (*BASE_PACKAGES, *INTERPRETER_PACKAGES), hooks=SANDBOX_USER, files=INTERPRETER_FILES
    ),
}


class TemplateStore:
    """The ``Templates`` port on mmdebstrap. Builds need root and a reachable Debian
    mirror; failures raise RuntimeFailure with mmdebstrap's last lines."""

    def __init__(
        self,
        settings: Settings,
        *,
        recipes: Mapping[str, Recipe] | None = None,
        mmdebstrap: str = "mmdebstrap",
        mirrors: Sequence[str] = DEFAULT_MIRRORS,
    ) -> None:
        self._dir = settings.templates_dir
        self._uid_base = settings.uid_base
        self._uid_count = settings.uid_count
        self._recipes = dict(RECIPES if recipes is None else recipes)
        self._mmdebstrap = mmdebstrap
        self._mirrors = tuple(mirrors)
        self._locks: dict[str, asyncio.Lock] = {}
        # (name, digest) -> (template.json's inode and mtime, what it said): ``get``
        # reads a build's file again only once it is another file (a forced rebuild)
        self._loaded: dict[tuple[str, str], tuple[tuple[int, int], Template]] = {}

    def known(self) -> list[str]:
        return sorted(self._recipes)

    def digest(self, name: str) -> str:
        """The digest ``name`` builds to now; NotFound for an unknown name."""
        return self._recipe(name).digest(self._uid_base, self._uid_count)

    async def get(self, name: str) -> Template:
        """The current build of a known name (building it first if needed), or for a
        name without a recipe its newest build; NotFound otherwise."""
        self._check_name(name)
        if name in self._recipes:
            digest = self.digest(name)
            built = self._loaded_before(name, digest) or await asyncio.to_thread(self._load, name, digest)
            return built or await self.build(name)
        found = [t for t in await self.list() if t.name == name]
        if not found:
            raise NotFound(f"template {name!r} not found", field="templateID")
        return max(found, key=lambda t: t.created_at)

    async def build(self, name: str, progress: ProgressFn | None = None, force: bool = False) -> Template:
        """Build ``name`` unless it is built (``force``: build again and replace it;
        sandboxes running on the old tree keep it until the last one ends). Concurrent
        calls for one name build once. NotFound for a name without a recipe."""
        recipe = self._recipe(name)
        digest = recipe.digest(self._uid_base, self._uid_count)
        report = progress or (lambda _message, _fraction: None)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock, self._file_lock(name):
            if not force and (built := await asyncio.to_thread(self._load, name, digest)):
                report(f"{name}: already built", 1.0)
                return built
            await asyncio.to_thread(self._remove_leftovers, name)
            work = self._dir / name / f".build-{digest[:16]}-{secrets.token_hex(4)}"
            try:
                await asyncio.to_thread(work.mkdir, 0o700)
                if recipe.pip:
                    await self._download(recipe.pip, work / "wheels", name, report)
                await self._debootstrap(recipe, work / "rootfs", name, report)
                report(f"{name}: shifting ownership into the sandbox uid range", 0.96)
                await asyncio.to_thread(self._finish, work, name, digest, recipe)
                template = await asyncio.to_thread(self._publish, work, name, digest)
            except BaseException:
                await asyncio.to_thread(_discard, work)
                raise
            report(f"{name}: ready", 1.0)
            return template

    async def list(self) -> list[Template]:
        """Every published template, by name then age."""
        return await asyncio.to_thread(self._list)

    async def find(self, name: str, digest: str) -> Template | None:
        """That build of ``name``, None when it is not (or no longer) here."""
        if not NAME.fullmatch(name) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        return await asyncio.to_thread(self._load, name, digest)

    # -- building ------------------------------------------------------------------

    async def _debootstrap(self, recipe: Recipe, rootfs: Path, name: str, report: ProgressFn) -> None:
        args = [
            "--mode=root",
            "--format=directory",
            f"--variant={recipe.variant}",
            f"--include={','.join(sorted(set(recipe.packages)))}",
            *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
            '--aptopt=Acquire::Retries "3"',
            *(f"--customize-hook={hook}" for hook in recipe.hooks),
            *(f"--customize-hook={hook}" for hook in _pip_hooks(recipe.pip, rootfs.parent / "wheels")),
            recipe.suite,
            str(rootfs),
            *(mirror.format(suite=recipe.suite) for mirror in self._mirrors),
        ]
        report(f"{name}: starting mmdebstrap", 0.0)
        try:
            proc = await asyncio.create_subprocess_exec(
                self._mmdebstrap,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "LC_ALL": "C.UTF-8"},
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self._mmdebstrap}: {exc}") from exc
        last: collections.deque[str] = collections.deque(maxlen=30)
        try:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                last.append(line)
                for marker, fraction, message in PHASES:
                    if line.startswith("I: ") and marker in line:
                        report(f"{name}: {message}", fraction)
            code = await proc.wait()
        except BaseException:
            if proc.returncode is None:  # cancelled: let it unmount what it mounted
                proc.terminate()
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            raise
        if code != 0:
            raise RuntimeFailure(f"building template {name!r} failed ({code}): " + " | ".join(last))

    async def _download(self, requirements: Sequence[str], into: Path, name: str, report: ProgressFn) -> None:
        """The wheels of ``requirements`` and their dependencies, for the root's Python
        (bookworm's: CPython 3.11, glibc 2.36, x86-64), downloaded by the host's pip
        into ``into``."""
        report(f"{name}: downloading wheels", 0.01)
        command = [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"),
            *("--python-version", "3.11", "--implementation", "cp"),
            *(arg for glibc in range(17, 37) for arg in ("--platform", f"manylinux_2_{glibc}_x86_64")),
            *("--dest", str(into), *requirements),
        ]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            tail = " | ".join(out.decode(errors="replace").strip().splitlines()[-10:])
            raise RuntimeFailure(f"downloading the wheels of template {name!r} failed: {tail}")

    def _finish(self, work: Path, name: str, digest: str, recipe: Recipe) -> None:
        rootfs = work / "rootfs"
        if mounts.under(rootfs):
            raise RuntimeFailure(f"mmdebstrap left mounts in {rootfs}")
        for pattern in recipe.remove:
            for match in glob.glob(str(rootfs / pattern)):
                os.unlink(match)
        normalize(rootfs)
        lay(rootfs, recipe.files)
        shifted = shift_tree(rootfs, self._uid_base, self._uid_count)
        meta = {
            "name": name,
            "digest": digest,
            "created_at": datetime.now(UTC).isoformat(),
            "size_bytes": shifted.size_bytes,
            "recipe": {
                **asdict(recipe),
                "packages": sorted(set(recipe.packages)),
                "files": {path: hashlib.sha256(text.encode()).hexdigest() for path, text in recipe.files},
            },
        }
        path = work / "template.json"
        path.write_text(json.dumps(meta, indent=2) + "\n")
        path.chmod(0o444)

    def _publish(self, work: Path, name: str, digest: str) -> Template:
        final = self._dir / name / digest
        if final.exists():  # forced rebuild: running sandboxes keep the old tree
            final.chmod(0o755)
            final.rename(final.with_name(f".retired-{secrets.token_hex(4)}"))
        work.rename(final)
        final.chmod(0o555)
        fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        template = self._load(name, digest)
        assert template is not None
        return template

    def _remove_leftovers(self, name: str) -> None:
        """Called with the name's locks held: every ``.build-*`` dir is dead."""
        parent = self._dir / name
        in_use = any(
            entry.fstype == "overlay" and f"lowerdir={parent}/" in entry.options for entry in mounts.table()
        )
        for entry in os.scandir(parent):
            if entry.name.startswith(".build-") or (entry.name.startswith(".retired-") and not in_use):
                mounts.unmount_all(entry.path)
                os.chmod(entry.path, 0o700)
                _remove_tree(Path(entry.path))

    # -- reading -------------------------------------------------------------------

    def _loaded_before(self, name: str, digest: str) -> Template | None:
        """The template ``_load`` read last for this build, if its template.json is still
        that file: one stat, on the loop (a turn of a thread costs a create far more)."""
        kept = self._loaded.get((name, digest))
        if kept is None:
            return None
        try:
            st = os.stat(self._dir / name / digest / "template.json")
        except OSError:
            return None
        return kept[1] if kept[0] == (st.st_ino, st.st_mtime_ns) else None

    def _load(self, name: str, digest: str) -> Template | None:
        try:
            with open(self._dir / name / digest / "template.json", "rb") as f:
                st = os.fstat(f.fileno())
                meta = json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError as exc:
            raise RuntimeFailure(f"template {name}/{digest} has a broken template.json") from exc
        template = Template(
            name=name,
            digest=digest,
            rootfs=str(self._dir / name / digest / "rootfs"),
            created_at=datetime.fromisoformat(meta["created_at"]),
            size_bytes=int(meta.get("size_bytes", 0)),
            config=image_config(meta.get("config")),
        )
        if len(self._loaded) >= LOADED_KEPT:
            self._loaded.clear()
        self._loaded[(name, digest)] = ((st.st_ino, st.st_mtime_ns), template)
        return template

    def _list(self) -> builtins.list[Template]:
        found = []
        try:
            names = sorted(e.name for e in os.scandir(self._dir) if e.is_dir() and NAME.fullmatch(e.name))
        except FileNotFoundError:
            return []
        for name in names:
            for entry in os.scandir(self._dir / name):
                if not entry.name.startswith(".") and (template := self._load(name, entry.name)):
                    found.append(template)
        return sorted(found, key=lambda t: (t.name, t.created_at))

    # -- helpers -------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if not NAME.fullmatch(name):
            raise InvalidInput(f"invalid template name {name!r}", field="templateID")

    def _recipe(self, name: str) -> Recipe:
        self._check_name(name)
        try:
            return self._recipes[name]
        except KeyError:
            raise NotFound(f"template {name!r} not found", field="templateID") from None

    @contextlib.asynccontextmanager
    async def _file_lock(self, name: str) -> AsyncIterator[None]:
        parent = self._dir / name
        await asyncio.to_thread(parent.mkdir, 0o700, True, True)
        await asyncio.to_thread(os.chmod, self._dir, 0o700)  # the trees are nobody else's business
        fd = os.open(parent / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.1)
            yield
        finally:
            os.close(fd)


def image_config(raw: object) -> ImageConfig:
    """The ``config`` of a template.json (Dockerfile templates): env, workdir, user."""
    if not isinstance(raw, dict):
        return ImageConfig()
    env = raw.get("env") or []
    workdir, user = raw.get("workdir"), raw.get("user")
    return ImageConfig(
        env=tuple((str(k), str(v)) for k, v in env),
        workdir=str(workdir) if workdir else None,
        user=str(user) if user else None,
    )


def normalize(rootfs: Path) -> None:
    """Files every sandbox replaces, reset to neutral content (mmdebstrap copies the
    build host's), and the agent's mount point, all owned like the root itself (so
    before or after the ownership shift alike). Nothing in the root is followed
    (``rootdir.py``): NotConfined when ``/etc``, ``/opt`` or ``/opt/corral`` is not a
    real directory (a link, a file), IsADirectoryError when one of the files is a
    directory; OSError."""
    with RootDir.open(rootfs) as root:
        top = root.lstat(".")
        uid, gid = top.st_uid, top.st_gid
        with root.subdir("etc") as etc:
            for name, text in (
                ("hostname", "localhost\n"),
                ("hosts", "127.0.0.1\tlocalhost\n"),
                ("resolv.conf", ""),
            ):
                etc.write(name, text.encode(), mode=0o644, uid=uid, gid=gid)
        with root.subdir("opt/corral", create=(0o755, uid, gid)) as agent_dir:
            try:
                kind = agent_dir.lstat("agent.py").st_mode
            except FileNotFoundError:
                kind = 0
            if not stat.S_ISREG(kind):
                agent_dir.write("agent.py", b"", mode=0o644, uid=uid, gid=gid)


def _pip_hooks(requirements: Sequence[str], wheels: Path) -> tuple[str, ...]:
    """mmdebstrap hooks that install ``requirements`` from the wheels in ``wheels``."""
    if not requirements:
        return ()
    names = " ".join(f"'{r}'" for r in requirements)
    pip = "python3 -m pip install --quiet --no-index --no-cache-dir --break-system-packages"
    return (
        f'chroot "$1" install -d -m 0700 {WHEELS_IN_ROOT}',
        f"copy-in {' '.join(str(w) for w in sorted(wheels.iterdir()))} {WHEELS_IN_ROOT}"
        if wheels.is_dir()
        else "false",
        f'chroot "$1" {pip} --find-links {WHEELS_IN_ROOT} {names}',
        f'chroot "$1" rm -rf {WHEELS_IN_ROOT}',
    )


def lay(rootfs: Path, files: Sequence[tuple[str, str]]) -> None:
    """Write each (path, text) of ``files`` into the root, mode 0644, its directories made
    0755, all owned like the root itself; nothing in the root followed (``rootdir.py``)."""
    with RootDir.open(rootfs) as root:
        top = root.lstat(".")
        for path, text in files:
            parent, _, name = path.rpartition("/")
            with root.subdir(parent, create=(0o755, top.st_uid, top.st_gid)) as where:
                where.write(name, text.encode(), mode=0o644, uid=top.st_uid, gid=top.st_gid)


def _discard(path: Path) -> None:
    """Best-effort removal of a failed build; what stays is removed by the next build."""
    try:
        mounts.unmount_all(path)
        _remove_tree(path)
    except (OSError, RuntimeFailure) as exc:
        log.warning("could not remove %s: %s", path, exc)


def _remove_tree(path: Path) -> None:
    """rm -rf, refusing to descend into anything mounted below ``path``."""
    if mounts.under(path):
        raise RuntimeFailure(f"{path} still has mounts; not removing it")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
