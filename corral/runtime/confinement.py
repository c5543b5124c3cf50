"""The confinement of a template build: what a sandbox gets, given to buildah.

A Dockerfile's ``RUN`` steps are a tenant's code, so a build runs them under the
confinement of a sandbox (docs/security.md, "Template builds"). ``BuildConfinement.enter``
sets it up for one build and yields the flags of ``buildah build``; leaving it tears
everything down, whatever happened (the build's processes included):

* **Network**: the build gets a network of its own from the node's ``Network`` (the
  port sandboxes use: a netns, a veth to the bridge, the same nftables rules), under a
  fresh ``sb-`` id, with the build egress policy (``Settings.build_egress_allow``,
  deny_all otherwise: the host, the control plane, other sandboxes and link-local are
  denied whatever it says, exactly as for a sandbox). RUN steps join that namespace
  (``--network ns:<path>``), resolve through the sandboxes' resolver on the bridge
  (``--dns``: names are answered, and their addresses pinned, only when allowed), and
  see a sysfs of that namespace, mounted here and bound read-only at ``/sys`` (a user
  namespace may not mount sysfs for a network namespace the host owns). Without a
  network (networking disabled, as in tests): ``--network none``, loopback only.
* **No new privileges**: buildah 1.28 refuses ``--security-opt no-new-privileges``, so
  buildah runs under ``setpriv --no-new-privs`` (:data:`NO_NEW_PRIVS`); every process it
  starts inherits the flag (runc, and the steps: ``NoNewPrivs: 1``).
* **Seccomp**: a sandbox's profile (``seccomp.py``), written to ``<home>/seccomp.json``
  and given with ``--security-opt seccomp=``; buildah's own default would let a step
  make nested user namespaces and use keyrings. Capabilities are buildah's defaults,
  which are a sandbox's set (Docker's minus MKNOD, NET_RAW and AUDIT_WRITE).
* **Resources**: each RUN step's memory (no swap) and CPU quota (buildah's
  ``--memory``, ``--memory-swap``, ``--cpu-period``/``--cpu-quota``); a pids limit
  on a cgroup of the build's own, ``corral-builds/<node>/<id>``, under which every
  step's cgroup is made (``--cgroup-parent .../run``), so it bounds all of the
  build's processes. Leaving kills what is left in it (a step that outlived a timed-out
  buildah) and removes it. ``<node>`` names the data dir, so two servers on one host
  never sweep each other's builds. A step has its own cgroup namespace, as a sandbox
  does (it sees ``/``, not the host's cgroup paths).
* **Time**: ``Settings.build_timeout_s`` for the whole build. At the deadline every
  process in the build's cgroup is killed (again each second while buildah runs), so
  the running step fails and buildah cleans up after itself as after any failed step;
  ``Confined.expired`` says so. The builder kills buildah itself only if it is still
  there :data:`KILL_GRACE_S` later (a pull, which runs no step).

What a crash leaves (a build's cgroup, its sysfs mount) is swept by the next build's
``enter``; its network by the runtime's reclaim at start-up (an ``sb-`` id no sandbox
has).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from corral.domain import EgressMode, EgressPolicy
from corral.domain.egress import validate_policy
from corral.errors import CorralError, RuntimeFailure
from corral.ids import new_id
from corral.ports import Network
from corral.runtime import cgroups, mounts
from corral.runtime.seccomp import default_profile
from corral.settings import Settings

log = logging.getLogger("corral.builder")

NO_NEW_PRIVS = ("setpriv", "--no-new-privs")
CPU_PERIOD_US = 100_000
KILL_GRACE_S = 60.0
CGROUP_PARENT = "corral-builds"


@dataclass
class Confined:
    """One build's confinement, as ``enter`` yields it."""

    flags: list[str]  # of ``buildah build``
    expired: bool = False  # its steps were killed at the time limit


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use."""

    memory_mb: int
    cpu_count: int
    pids: int
    timeout_s: float
    egress: EgressPolicy

    @classmethod
    def of(cls, settings: Settings) -> BuildLimits:
        """The operator's build settings; InvalidInput naming ``build_egress_allow``
        for an entry that is not a CIDR, hostname or ``*.domain``."""
        egress = EgressPolicy(mode=EgressMode.DENY_ALL, allow=tuple(settings.build_egress_allow))
        return cls(
            memory_mb=settings.build_memory_mb,
            cpu_count=settings.build_cpu_count,
            pids=settings.build_pids_limit,
            timeout_s=settings.build_timeout_s,
            egress=validate_policy(egress, field="build_egress_allow"),
        )


class BuildConfinement:
    """See the module docstring. ``network`` None: builds have loopback only."""

    def __init__(
        self,
        limits: BuildLimits,
        home: Path,
        network: Network | None,
        *,
        cgroup_root: Path = cgroups.ROOT,
    ) -> None:
        self.limits = limits
        self._sysfs = home / "sysfs"
        self._seccomp = home / "seccomp.json"
        self._network = network
        self._cgroup_root = cgroup_root
        self._parent = f"{CGROUP_PARENT}/{hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]}"
        self._live: set[str] = set()

    @contextlib.asynccontextmanager
    async def enter(self) -> AsyncIterator[Confined]:
        """Set up one build's confinement; yields the flags of ``buildah build`` (run it
        under :data:`NO_NEW_PRIVS`) and whether the time limit killed its steps.
        RuntimeFailure if it cannot be set up (nothing is left then)."""
        build_id = new_id("sb")
        await self._sweep()
        self._live.add(build_id)
        try:
            async with contextlib.AsyncExitStack() as undo:
                undo.push_async_callback(self._remove_cgroup, build_id)
                await self._make_cgroup(build_id)
                await asyncio.to_thread(_write_profile, self._seccomp)
                flags = [
                    "--security-opt",
                    f"seccomp={self._seccomp}",
                    "--cgroup-parent",
                    f"/{self._parent}/{build_id}/run",
                    "--cgroupns",
                    "private",
                    "--memory",
                    f"{self.limits.memory_mb}m",
                    "--memory-swap",
                    f"{self.limits.memory_mb}m",
                    "--cpu-period",
                    str(CPU_PERIOD_US),
                    "--cpu-quota",
                    str(self.limits.cpu_count * CPU_PERIOD_US),
                ]
                if self._network is None:
                    flags += ["--network", "none"]
                else:
                    flags += await self._attach(build_id, undo)
                confined = Confined(flags)
                watch = asyncio.create_task(self._watch(build_id, confined), name=f"corral-build-{build_id}")
                undo.callback(watch.cancel)
                yield confined
        finally:
            self._live.discard(build_id)

    async def _attach(self, build_id: str, undo: contextlib.AsyncExitStack) -> list[str]:
        assert self._network is not None
        undo.push_async_callback(self._quietly, self._network.detach, build_id)
        info = await self._network.attach(build_id, self.limits.egress)
        sysfs = self._sysfs / build_id
        await asyncio.to_thread(sysfs.mkdir, 0o700, True, True)
        undo.push_async_callback(self._quietly, asyncio.to_thread, _unmount_and_remove, sysfs)
        try:
            await mounts.mount_sysfs_of_netns(info.netns_path, sysfs)
        except OSError as exc:
            raise RuntimeFailure(f"cannot mount a sysfs for the build's network: {exc}") from exc
        return [
            "--network",
            f"ns:{info.netns_path}",
            "--dns",
            info.gateway,
            "--volume",
            f"{sysfs}:/sys:ro,nosuid,nodev,noexec",
        ]

    async def _watch(self, build_id: str, confined: Confined) -> None:
        await asyncio.sleep(self.limits.timeout_s)
        confined.expired = True
        log.warning(
            "build %s reached its time limit (%g s): killing its steps", build_id, self.limits.timeout_s
        )
        while True:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(cgroups.kill, self._parent, build_id, self._cgroup_root)
            await asyncio.sleep(1.0)

    # -- the build's cgroup ----------------------------------------------------------

    async def _make_cgroup(self, build_id: str) -> None:
        try:
            await asyncio.to_thread(
                _make_pids_cgroup, self._cgroup_root, self._parent, build_id, self.limits.pids
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot make the build's cgroup: {exc}") from exc

    async def _remove_cgroup(self, build_id: str) -> None:
        try:
            await asyncio.to_thread(cgroups.remove, self._parent, build_id, self._cgroup_root)
        except OSError as exc:
            log.error("cannot remove the cgroup of build %s: %s", build_id, exc)

    async def _sweep(self) -> None:
        """Remove what builds of ours that are not running left (a crash)."""
        for build_id in await asyncio.to_thread(self._leftovers):
            if build_id not in self._live:
                log.warning("removing what build %s left", build_id)
                await self._remove_cgroup(build_id)
                await self._quietly(asyncio.to_thread, _unmount_and_remove, self._sysfs / build_id)

    def _leftovers(self) -> set[str]:
        found = cgroups.names(self._parent, self._cgroup_root)
        with contextlib.suppress(OSError):
            found.update(e.name for e in os.scandir(self._sysfs) if e.is_dir(follow_symlinks=False))
        return found

    @staticmethod
    async def _quietly(step: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            await step(*args)
        except (CorralError, OSError) as exc:
            log.error("build teardown: %s", exc)


def _make_pids_cgroup(root: Path, parent: str, build_id: str, pids: int) -> None:
    """``<pids hierarchy>/<parent>/<build_id>`` with ``pids.max``. On cgroup v2 the
    parents delegate the pids, memory and cpu controllers to their children first."""
    if (root / "cgroup.controllers").exists():  # v2: one hierarchy
        current = root
        for part in [*parent.split("/"), build_id]:
            with contextlib.suppress(OSError):  # a controller the parent lacks
                (current / "cgroup.subtree_control").write_text("+pids +memory +cpu")
            current = current / part
            current.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):  # for the step's cgroup below it
            (current / "cgroup.subtree_control").write_text("+pids +memory +cpu")
        (current / "pids.max").write_text(str(pids))
        return
    directory = root / "pids" / parent / build_id
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pids.max").write_text(str(pids))


def _write_profile(path: Path) -> None:
    """A sandbox's seccomp profile at ``path`` (replaced whole: a build reading the old
    one meanwhile reads the same rules)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_text(json.dumps(default_profile()))
    temporary.replace(path)


def _unmount_and_remove(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        mounts.unmount_all(directory)
        directory.rmdir()
