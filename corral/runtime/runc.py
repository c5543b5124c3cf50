"""RuncRuntime: sandboxes as OCI containers run by runc (DESIGN.md decisions 1 and 4).

A create is, in order, each step's undo pushed on an AsyncExitStack so any failure (or
cancellation) unwinds all of them: sandbox dir -> (with a network adapter: its netns,
and a sysfs for it) -> disk image -> disk mount -> upper, work and /etc files ->
overlay mount -> the user namespace (``userns.py``: owned by the sandbox's own host uid)
-> config.json -> listening socket -> ``runc run`` (started from the launch namespace,
``launchns.py``, with clones of the root, sysfs and netns bind) -> the agent's ping. Three of them
go side by side from the start, being independent: the network's attach, the user
namespace's helper process, and the disk's steps.
Paths are in ``layout.py``, the config in ``bundle.py``, the disk in ``disk.py``.

What outlives the corral process: everything. The container runs in its own session,
reparented to init; its state is under ``settings.runc_root`` (tmpfs, gone at reboot
like the containers); the mounts stay in the host's mount namespace; the agent keeps
accepting on its socket. A new RuncRuntime over the same settings sees and drives the
same sandboxes: it keeps no state of its own beyond per-id locks.

Teardown (destroy and reclaim) is one idempotent routine that tolerates any partial
state: kill the init (which takes its whole pid namespace with it) through a pidfd
opened from its pid file and wait for it (``teardown.py``; through ``runc kill`` when
the pid file cannot be trusted), ``runc delete``, unmount everything under the sandbox
dir, detach any loop device still backed by its image, remove its cgroup dirs, remove
the dir. ``discard`` returns once the processes are dead and leaves the rest to a
bounded background task that holds the sandbox's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import resource
import shutil
import socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from corral import priority
from corral.domain import EgressPolicy, Limits, RuntimeState, SandboxSpec
from corral.domain.usage import Usage
from corral.errors import Conflict, CorralError, NotFound, RuntimeFailure, Unavailable
from corral.ports import Agent, NetInfo, Network
from corral.runtime import bundle, cgroups, cpu_quota, freeze, loopdev, mounts, overlay, treework
from corral.runtime import userns as owners
from corral.runtime.agentfile import AgentFiles
from corral.runtime.blocking import finish, finish_owning
from corral.runtime.disk import DiskImages
from corral.runtime.launchns import LaunchNamespace
from corral.runtime.layout import SandboxPaths, valid_id
from corral.runtime.locks import Locks
from corral.runtime.rootdir import RootDir
from corral.runtime.runcbin import RuncBinary
from corral.runtime.teardown import Teardowns, init_pidfd, kill_init, stop_container
from corral.runtime.userns import UserNamespace, owner_uid
from corral.settings import Settings

log = logging.getLogger(__name__)

CGROUP_PARENT = "corral"
YIELD_S = 1.0  # longest a background teardown step waits for creates in progress
STALE_CGROUP_S = 60.0
AgentFactory = Callable[[Path], Agent]


def _default_agent_path() -> Path:
    return Path(__file__).resolve().parent.parent / "agent" / "sandbox_agent.py"


def _default_agent_factory(socket_path: Path) -> Agent:
    from corral.agent.client import AgentClient

    return AgentClient(socket_path)


TEMPLATE_ROOTS_KEPT = 256  # remembered roots (checked again once forgotten)


class RuncRuntime:
    """The ``Runtime`` port on runc. See the module docstring for what a sandbox is made
    of and what survives a restart. Every public method validates the id first
    (InvalidInput) and raises only corral errors."""

    name = "runc"

    def __init__(
        self,
        settings: Settings,
        *,
        agent_path: Path | None = None,
        agent_factory: AgentFactory | None = None,
        network: Network | None = None,
        nameservers: Sequence[str] = (),
        start_timeout: float = 15.0,
        precompile_agent: bool = True,
        teardown_concurrency: int = 2,
    ) -> None:
        for path in (settings.data_dir, settings.templates_dir):
            if any(ch in str(path) for ch in ",:\n"):
                raise CorralError(f"data dir {path} must not contain ',' or ':' (overlay options)")
        self._settings = settings
        self._sandboxes = settings.sandboxes_dir
        self._runc = RuncBinary(settings.oci_runtime, settings.runc_root)
        # where runc starts containers from: none of the host's sandbox mounts (launchns.py)
        runc_program = shutil.which(settings.oci_runtime)
        self._launch = LaunchNamespace(
            [settings.data_dir, settings.runc_root, *([Path(runc_program)] if runc_program else [])]
        )
        self._disks = DiskImages(settings.data_dir / "disks")
        self._agent_files = AgentFiles(
            agent_path or _default_agent_path(), settings.data_dir / "agent", precompile=precompile_agent
        )
        self._agent_factory = agent_factory or _default_agent_factory
        self._network = network
        self._nameservers = tuple(nameservers)
        self._start_timeout = start_timeout
        self.locks = Locks()  # shared with its snapshotter (snapshot.py)
        self._teardowns = Teardowns(teardown_concurrency)
        self.quotas = cpu_quota.cgroup_quotas(CGROUP_PARENT)  # CPU-time quotas (cpu_quota.py)
        self._trees = treework.shared()  # work in template roots and upper layers (rootdir.py)
        self._owners = asyncio.Lock()  # one owner uid per sandbox (userns.owner_uid)
        # template roots checked so far -> the agent file to bind on them: a published
        # root does not change, so two tree-pool steps a create are done once a root
        self._template_roots: dict[Path, Path] = {}

    # -- the port ------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> None:
        """Start the sandbox; return once its agent answers a ping. Conflict if the id
        already has any trace on this node; RuntimeFailure (with nothing left behind)
        for every other failure."""
        paths = self.paths(spec.id)
        async with self.locks.of(spec.id):
            if paths.dir.exists() or (self._runc.root / spec.id).exists():
                raise Conflict(f"sandbox {spec.id} already exists on this node")
            try:
                with priority.serving():  # background teardowns and refills step aside
                    async with contextlib.AsyncExitStack() as undo:
                        await self._start(spec, paths, undo)
                        undo.pop_all()
            except BaseException as exc:
                if paths.dir.exists():  # an undo step failed: one more full teardown
                    await self._quietly("teardown", self._teardown, paths)
                if isinstance(exc, RuntimeFailure) or not isinstance(exc, Exception):
                    raise
                raise RuntimeFailure(f"create {spec.id}: {exc}") from exc

    async def destroy(self, sandbox_id: str) -> None:
        """Remove the sandbox and every trace of it; idempotent (a missing sandbox is a
        no-op). RuntimeFailure if something could not be removed."""
        paths = self.paths(sandbox_id)
        async with self.locks.of(sandbox_id):
            await self._teardown(paths)

    async def discard(self, sandbox_id: str) -> None:
        """Kill the sandbox's processes and return once they are dead; the rest of the
        teardown (``runc delete``, network, unmounts, disk image, cgroups, dir) goes on
        in the background, holding the sandbox's lock (a ``destroy``, snapshot or
        ``reclaim`` of the id waits for it). Idempotent. A crash before it ends leaves
        traces that ``reclaim`` removes. RuntimeFailure if the processes could not be
        killed (then nothing goes on)."""
        paths = self.paths(sandbox_id)
        lock = self.locks.of(sandbox_id)
        await lock.acquire()
        try:
            try:
                dead = await kill_init(paths.pid_file, CGROUP_PARENT, paths.id)
            except TimeoutError:
                dead = None
            if not dead:
                await self._stop_container(paths.id)  # through runc, as destroy does
        except BaseException as exc:
            lock.release()
            if isinstance(exc, CorralError | OSError) and not isinstance(exc, RuntimeFailure):
                raise RuntimeFailure(f"kill {paths.id}: {exc}") from exc
            raise
        self._teardowns.start(paths.id, lock, lambda: self._teardown(paths, background=True))

    async def settle(self, timeout: float = 30.0) -> bool:
        """Wait up to ``timeout`` seconds for the background teardowns ``discard``
        started; False if some are still running."""
        return await self._teardowns.settle(timeout)

    async def state(self, sandbox_id: str) -> RuntimeState:
        """RUNNING while the init (the agent) runs; STOPPED when the sandbox has traces
        but no running init; MISSING when it has none."""
        paths = self.paths(sandbox_id)
        try:  # runc's state file, not a runc process (a reconcile asks for every sandbox)
            status = await asyncio.to_thread(self._runc.status_from_file, paths.id)
        except ValueError:
            state = await self._runc.state(sandbox_id)
            status = None if state is None else str(state.get("status"))
        if status in ("running", "paused"):
            return RuntimeState.RUNNING
        if status is not None or paths.dir.exists():
            return RuntimeState.STOPPED
        return RuntimeState.MISSING

    async def list_ids(self) -> set[str]:
        """Ids known to runc under our root or having a sandbox dir."""
        found = {str(item.get("id")) for item in await self._runc.list()}
        found.update(await asyncio.to_thread(self._dir_ids))
        return {sandbox_id for sandbox_id in found if valid_id(sandbox_id)}

    async def reclaim(self, keep: set[str]) -> list[str]:
        """Tear down every sandbox not in ``keep`` that has any trace here: runc state
        under our root, a dir, a mount or loop device under our sandboxes dir, a stale
        cgroup dir (see ``_host_trace_ids``), the network's leftovers. Call it
        before creating sandboxes (at start-up), or include ids being created in
        ``keep``. Returns the ids removed, sorted; RuntimeFailure if one could not be."""
        found = await self.list_ids()
        found.update(await asyncio.to_thread(self._host_trace_ids))
        removed = sorted(sandbox_id for sandbox_id in found if sandbox_id not in keep)
        failures = []
        for sandbox_id in removed:
            try:
                await self.destroy(sandbox_id)
            except RuntimeFailure as exc:
                failures.append(str(exc))
        for sandbox_id in found & keep:  # a restarted corral watches their quotas again
            await self.watch_quota(sandbox_id)
        if self._network is not None:
            removed = sorted({*removed, *await self._network.reclaim(keep)})
        if failures:
            raise RuntimeFailure("reclaim incomplete: " + "; ".join(failures))
        return removed

    def agent(self, sandbox_id: str) -> Agent:
        """A client of the sandbox's agent (no I/O until used)."""
        return self._agent_factory(self.paths(sandbox_id).socket)

    async def address(self, sandbox_id: str) -> str:
        """The sandbox's address on the bridge; NotFound without a network (a sandbox
        with loopback only cannot be reached from the host)."""
        info = await self._network.info(self.paths(sandbox_id).id) if self._network else None
        if info is None:
            raise NotFound(f"sandbox {sandbox_id} has no network address")
        return info.address

    async def set_egress(self, sandbox_id: str, policy: EgressPolicy) -> None:
        """Apply ``policy`` now. Unavailable without a network (loopback only: there is
        no egress to open)."""
        if self._network is None:
            raise Unavailable("sandbox networking is not configured on this node")
        await self._network.set_policy(self.paths(sandbox_id).id, policy)

    async def set_limits(self, sandbox_id: str, limits: Limits) -> None:
        """``runc update`` of its cgroups (memory, CPUs, pids), its ``/dev/shm`` resized
        to match (``mounts.resize_shm``), its disk's reserve
        (``disk.py``), its config rewritten (``bundle.update``) and its CPU-time quota
        watched anew. NotFound without a disk here; Conflict for more disk than its image
        holds; RuntimeFailure otherwise (what was changed by then stays changed)."""
        paths = self.paths(sandbox_id)
        async with self.locks.of(paths.id):
            try:
                room = await asyncio.to_thread(os.path.getsize, paths.disk_image)
            except FileNotFoundError:
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node") from None
            if limits.disk_mb * 1024 * 1024 > room:
                raise Conflict(f"sandbox {sandbox_id} has a disk of {room >> 20} MiB, not {limits.disk_mb}")
            try:
                await self._runc.update(paths.id, bundle.resources(limits))
                await _resize_shm(paths, bundle.shm_mb(limits))
                await self._disks.limit(paths.disk, limits.disk_mb)
                await finish(bundle.update, paths, limits)
            except OSError as exc:
                raise RuntimeFailure(f"limits of {sandbox_id}: {exc}") from exc
            self.quotas.disarm(paths.id)
            if limits.cpu_seconds is not None:
                self.quotas.arm(paths.id, limits.cpu_seconds, limits.cpu_count)

    async def usage(self, sandbox_id: str) -> Usage:
        """Read from the sandbox's cgroups (``cgroups.usage``; they outlive its
        processes until the teardown) and its CPU-time quota from its config.
        NotFound when it has no cgroup."""
        paths = self.paths(sandbox_id)
        try:
            found, quota = await asyncio.to_thread(
                lambda: (cgroups.usage(CGROUP_PARENT, paths.id), cpu_quota.quota_of(paths.config))
            )
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"usage of {sandbox_id}: {exc}") from exc
        if found is None:
            raise NotFound(f"sandbox {sandbox_id} has no cgroup on this node")
        return replace(found, cpu_quota_seconds=quota[0]) if quota else found

    async def health(self) -> dict[str, object]:
        """``{"runtime": "runc", "ok": bool, "version": str, "binary": str,
        "teardowns": int}`` (background teardowns under way; plus ``"error"`` when the
        binary does not answer)."""
        report: dict[str, object] = {
            "runtime": self.name,
            "binary": self._runc.binary,
            "teardowns": self._teardowns.pending,
        }
        try:
            report.update(ok=True, version=await self._runc.version())
        except RuntimeFailure as exc:
            report.update(ok=False, version=None, error=exc.message)
        return report

    async def freeze(self, sandbox_id: str) -> None:
        """Freeze the sandbox's cgroup (``freeze.freeze_cgroup``; not ``runc pause``, a
        process start-up more). NotFound without a cgroup; RuntimeFailure (thawed)."""
        paths = self.paths(sandbox_id)
        try:
            froze = await asyncio.to_thread(freeze.freeze_cgroup, CGROUP_PARENT, paths.id)
        except OSError as exc:
            raise RuntimeFailure(f"freeze {sandbox_id}: {exc}") from exc
        if not froze:
            raise NotFound(f"sandbox {sandbox_id} is not running on this node")

    async def thaw(self, sandbox_id: str) -> None:
        """Thaw the sandbox's cgroup (one write: done on the event loop)."""
        paths = self.paths(sandbox_id)
        try:
            freeze.thaw_cgroup(CGROUP_PARENT, paths.id)
        except OSError as exc:
            raise RuntimeFailure(f"thaw {sandbox_id}: {exc}") from exc

    # -- beyond the port -----------------------------------------------------------

    async def watch_quota(self, sandbox_id: str) -> bool:
        """Watch the sandbox's CPU-time quota, as its config says it (``cpu_quota.py``;
        ``create`` and ``reclaim``, for the sandboxes it keeps, do); False without one."""
        quota = await asyncio.to_thread(cpu_quota.quota_of, self.paths(sandbox_id).config)
        if quota is not None:
            self.quotas.arm(sandbox_id, *quota)
        return quota is not None

    def paths(self, sandbox_id: str) -> SandboxPaths:
        """Host paths of a sandbox (upper dir for checkpoints, logs). InvalidInput for a
        bad id."""
        return SandboxPaths.of(self._sandboxes, sandbox_id)

    async def init_pid(self, sandbox_id: str) -> int | None:
        """Host pid of the sandbox's init (the agent), None when it is not running."""
        state = await self._runc.state(self.paths(sandbox_id).id)
        pid = state.get("pid") if state and state.get("status") == "running" else None
        return pid if isinstance(pid, int) and pid > 0 else None

    async def hibernate(self, sandbox_id: str) -> int:
        """Park the sandbox (``_park``) and return the bytes its disk image occupies.
        NotFound without a disk image; idempotent."""
        paths = self.paths(sandbox_id)
        async with self.locks.of(paths.id):
            if not await asyncio.to_thread(paths.disk_image.exists):
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            await self._park(paths.id)
            return await asyncio.to_thread(allocated, paths.disk_image)

    async def resume(self, spec: SandboxSpec, *, forked: bool = False) -> None:
        """Boot the sandbox on the disk image in its dir (parking first what a crash in
        the middle of a stop left). NotFound without a disk image; a failure parks it
        again (RuntimeFailure)."""
        paths = self.paths(spec.id)
        async with self.locks.of(paths.id):
            if not await asyncio.to_thread(paths.disk_image.exists):
                raise NotFound(f"sandbox {spec.id} has no disk on this node")
            if await asyncio.to_thread(has_run_state, paths):
                await self._park(spec.id)
            await self._boot(spec, forked=forked)

    # -- a sandbox stopped with its disk kept, and started again -------------------

    async def _boot(self, spec: SandboxSpec, *, forked: bool) -> None:
        """Start ``spec.id`` on the disk image already in its dir and return once its
        agent answers; the caller holds the lock. On failure it is parked (its disk
        kept). RuntimeFailure."""
        paths = self.paths(spec.id)
        try:
            with priority.serving():
                async with contextlib.AsyncExitStack() as undo:
                    await self._start(spec, paths, undo, kept_disk=True, forked=forked)
                    undo.pop_all()
        except BaseException as exc:
            await self._quietly("park", self._park, spec.id)
            if isinstance(exc, RuntimeFailure) or not isinstance(exc, Exception):
                raise
            raise RuntimeFailure(f"start {spec.id}: {exc}") from exc

    async def _park(self, sandbox_id: str) -> None:
        """Stop the container and free all it holds but its disk image: processes,
        memory, cgroups, network, mounts, loop device, run files. Idempotent; the caller
        holds the lock. RuntimeFailure."""
        paths = self.paths(sandbox_id)
        try:
            await self._stop_container(paths.id)
            if self._network is not None:
                await self._network.detach(paths.id)
            await asyncio.to_thread(_park_host_state, paths)
        except RuntimeFailure:
            raise
        except (CorralError, OSError) as exc:
            raise RuntimeFailure(f"stop {paths.id}: {exc}") from exc

    # -- create --------------------------------------------------------------------

    async def _start(
        self,
        spec: SandboxSpec,
        paths: SandboxPaths,
        undo: contextlib.AsyncExitStack,
        *,
        kept_disk: bool = False,
        forked: bool = False,
    ) -> None:
        """Start ``spec``; with ``kept_disk`` on the disk image already in its dir (a
        hibernated, restored or, with ``forked``, a new sandbox on a copied disk)."""
        lower = Path(spec.template.rootfs)
        settings = self._settings
        if not kept_disk:
            await finish(bundle.make_dirs, paths, settings.data_dir, settings.uid_base)
            undo.push_async_callback(
                self._quietly, "remove dir", asyncio.to_thread, _remove_host_state, paths
            )
        agent_file = self._template_roots.get(lower)
        if agent_file is None:  # a root not seen yet: checked, and its agent file found, once
            if not await self._trees.run(paths.id, "checking the template root", _is_root, lower):
                raise RuntimeFailure(f"template root {lower} is missing or not a root filesystem")
            agent_file = await self._trees.run(
                paths.id, "reading the template root", self._agent_files.for_root, lower
            )
            if len(self._template_roots) >= TEMPLATE_ROOTS_KEPT:
                self._template_roots.clear()
            self._template_roots[lower] = agent_file
        # side by side with the disk's and the network's steps: a helper process to start
        making_userns = asyncio.ensure_future(self._user_namespace(paths))
        undo.push_async_callback(self._quietly, "end the userns helper", _drop_userns, making_userns)

        netns, nameservers = None, self._nameservers
        attaching = None
        if self._network is not None:  # side by side with the disk's steps
            attaching = asyncio.ensure_future(self._network.attach(spec.id, spec.egress))
            undo.push_async_callback(self._quietly, "detach network", self._drop_network, spec.id, attaching)

        # Each unmount is pushed before its mount (unmounting what is not mounted is a
        # no-op): a cancel lands only once a mount's thread returned (``finish``), and a
        # mount made then must be undone too. Steps that follow each other go to a thread
        # together: in a burst each turn of a thread waits behind everyone's.
        undo.push_async_callback(self._quietly, "unmount disk", self._disks.unmount, paths.disk)
        if kept_disk:
            await self._disks.mount(paths.disk_image, paths.disk, spec.limits.disk_mb)
        else:
            size_mb = max(spec.disk_room_mb or 0, spec.limits.disk_mb)
            await self._disks.make(paths.disk_image, paths.disk, size_mb, spec.limits.disk_mb)

        if attaching is not None:
            info = await attaching
            undo.push_async_callback(
                self._quietly, "unmount sysfs", asyncio.to_thread, mounts.umount, paths.sysfs
            )
            await mounts.mount_sysfs_of_netns(info.netns_path, paths.sysfs, make_mode=0o700)
            netns, nameservers = info.netns_path, (info.gateway,)

        undo.push_async_callback(
            self._quietly, "unmount rootfs", asyncio.to_thread, mounts.umount, paths.rootfs
        )
        if kept_disk:
            hostname = spec.id if forked else None
            await self._trees.run(
                paths.id,
                "refreshing the sandbox's /etc files",
                self._refresh_root,
                paths,
                lower,
                nameservers,
                hostname,
            )
        else:
            await self._trees.run(
                paths.id, "preparing the sandbox's disk", self._prepare_root, paths, lower, nameservers
            )

        userns = await making_userns
        image = spec.template.config
        nofile_hard = min(bundle.NOFILE_HARD, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        config = bundle.oci_config(
            sandbox_id=spec.id,
            limits=spec.limits,
            envs={**dict(image.env), **spec.envs},
            cwd=image.workdir or "/root",
            user=image.user if image.user not in (None, "", "root", "0", "0:0") else None,
            agent_path=str(agent_file),
            uid_base=settings.uid_base,
            uid_count=settings.uid_count,
            pty_max=settings.pty_max,
            nofile_hard=nofile_hard,
            netns_path=netns,
            sysfs_path=str(paths.sysfs) if netns else None,
            userns_path=userns.path,
        )
        listener, log_fd = await finish_owning(_close_run_files, bundle.write, paths, config)
        try:
            undo.push_async_callback(self._quietly, "delete container", self._stop_container, spec.id)
            await self._runc.run(
                spec.id,
                paths.dir,
                listen_fd=listener.fileno(),
                log_fd=log_fd,
                log_file=paths.runc_log,
                pid_file=paths.pid_file,
                nofile=bundle.nofile_limits(nofile_hard),
                netns=netns,
                launch=functools.partial(
                    self._launch.enter,
                    [paths.rootfs, *([paths.sysfs, Path(netns)] if netns else [])],
                    [paths.dir, settings.runc_root, agent_file],
                ),
            )
        finally:
            listener.close()  # the agent holds it now; if the agent dies, pings fail fast
            os.close(log_fd)
            await userns.close()  # the container holds its namespace now
        await self._wait_ready(paths)
        await self._leave_copies(paths)
        if spec.limits.cpu_seconds is not None:
            self.quotas.arm(spec.id, spec.limits.cpu_seconds, spec.limits.cpu_count)

    async def _leave_copies(self, paths: SandboxPaths) -> None:
        """Unmount our root and sysfs of a started sandbox: its mount namespace began as
        a copy of ours, so it has its own (its root since pivot_root, its /sys a bind of
        its copy), and the mounts it copied from the parents of ours are gone with its
        old root, so nothing propagates to it. The host keeps two mounts a sandbox (its
        disk, its network namespace) instead of four, and every later container's mount
        namespace, a copy of the host's, copies and detaches fewer
        (``bench/bench_host_mounts.py``: +20 ms a start at 1,000 more). A failure here
        leaves them for the teardown: the sandbox runs either way."""
        try:
            await finish(mounts.unmount_points, [paths.sysfs, paths.rootfs])
        except OSError as exc:
            log.warning("%s: its root and sysfs stay mounted on the host: %s", paths.id, exc)

    async def _user_namespace(self, paths: SandboxPaths) -> UserNamespace:
        """The sandbox's user namespace (``userns.py``), owned by its owner uid."""
        settings = self._settings
        async with self._owners:
            owner = await finish(owner_uid, paths, settings.userns_owner_base, settings.userns_owner_count)
        return await UserNamespace.make(
            owner=owner,
            uid_base=settings.uid_base,
            uid_count=settings.uid_count,
            msgqueue_bytes=settings.sandbox_msgqueue_bytes,
        )

    async def _drop_network(self, sandbox_id: str, attaching: asyncio.Future[NetInfo]) -> None:
        """Undo of a create's network attach that may still be running: stop it (it
        undoes itself), or detach what it attached."""
        attaching.cancel()
        try:
            await attaching
        except BaseException:  # noqa: BLE001 - cancelled or failed: nothing attached
            return
        assert self._network is not None
        await self._network.detach(sandbox_id)

    def _prepare_root(self, paths: SandboxPaths, lower: Path, nameservers: Sequence[str]) -> None:
        """A new sandbox's upper layer and log dir on its disk, and its root mounted."""
        overlay.prepare(
            lower,
            paths.upper,
            paths.work,
            hostname=paths.id,
            uid=self._settings.uid_base,
            nameservers=nameservers,
        )
        paths.logs.mkdir(mode=0o700)
        overlay.mount(lower, paths.upper, paths.work, paths.rootfs)

    def _refresh_root(
        self, paths: SandboxPaths, lower: Path, nameservers: Sequence[str], hostname: str | None
    ) -> None:
        """A kept disk's /etc files brought up to date, and its root mounted."""
        overlay.refresh(
            paths.upper, paths.work, uid=self._settings.uid_base, nameservers=nameservers, hostname=hostname
        )
        overlay.mount(lower, paths.upper, paths.work, paths.rootfs)

    async def _wait_ready(self, paths: SandboxPaths) -> None:
        try:
            await asyncio.wait_for(self._agent_factory(paths.socket).ping(), self._start_timeout)
        except (CorralError, OSError, TimeoutError) as exc:
            tail = await asyncio.to_thread(bundle.tail, paths.agent_log)
            raise RuntimeFailure(f"agent of {paths.id} did not answer: {exc!r}; agent log: {tail}") from exc

    # -- teardown ------------------------------------------------------------------

    async def _teardown(self, paths: SandboxPaths, *, background: bool = False) -> None:
        """Remove everything of the sandbox; in the ``background``, each step waits
        (a bounded time) for the creates in progress to finish (``priority.py``)."""
        step_aside = priority.quiet if background else _no_wait
        try:
            await step_aside(YIELD_S)
            await self._stop_container(paths.id)
            await step_aside(YIELD_S)
            await asyncio.to_thread(_remove_host_state, paths)
            # Last: behind a kill, the next create's network attach (its nft transaction)
            # is over by now instead of queueing behind this one's.
            if self._network is not None:
                await step_aside(YIELD_S)
                await self._network.detach(paths.id)
        except RuntimeFailure:
            raise
        except (CorralError, OSError) as exc:
            raise RuntimeFailure(f"destroy {paths.id}: {exc}") from exc

    async def _stop_container(self, sandbox_id: str) -> None:
        """Kill the init, wait for its pid namespace to empty, delete the container."""
        self.quotas.disarm(sandbox_id)
        await stop_container(self._runc, self.paths(sandbox_id).pid_file, CGROUP_PARENT, sandbox_id)

    # -- helpers -------------------------------------------------------------------

    def _dir_ids(self) -> set[str]:
        try:
            return {entry.name for entry in os.scandir(self._sandboxes) if valid_id(entry.name)}
        except FileNotFoundError:
            return set()

    def _host_trace_ids(self) -> set[str]:
        """Ids with a mount or a bound loop device under our sandboxes dir, or a stale
        cgroup dir. ``/corral/`` may be shared by several corral instances on a node,
        so a cgroup dir with nothing else of its id counts only when no process is in
        it and it is older than STALE_CGROUP_S (no create of anyone's is under way)."""
        prefix = str(self._sandboxes) + "/"
        paths = [entry.path for entry in mounts.under(self._sandboxes)]
        paths.extend(backing for backing in loopdev.backing_files().values())
        found = {p[len(prefix) :].split("/", 1)[0] for p in paths if p.startswith(prefix)}
        found.update(cgroups.stale_ids(CGROUP_PARENT, STALE_CGROUP_S))
        return {sandbox_id for sandbox_id in found if valid_id(sandbox_id)}

    @staticmethod
    async def _quietly(what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run one undo step; log and swallow its failure so the next steps still run."""
        try:
            await fn(*args)
        except Exception:
            log.exception("undo step %r failed", what)


async def _resize_shm(paths: SandboxPaths, size_mb: int) -> None:
    pidfd = await finish_owning(_close_pidfd, init_pidfd, paths.pid_file, CGROUP_PARENT, paths.id)
    if pidfd is None:
        raise OSError(errno.ESRCH, "its init is not running", paths.id)
    try:
        await mounts.resize_shm(pidfd, size_mb)  # a cancel waits for its thread: the fd stays open until then
    finally:
        os.close(pidfd)


def _close_pidfd(pidfd: int | None) -> None:
    if pidfd is not None:
        os.close(pidfd)


async def _drop_userns(making: asyncio.Future[UserNamespace]) -> None:
    """Undo of a create's user namespace that may still be in the making: stop it (it
    undoes itself), or end its helper (idempotent: the create ends it once runc runs)."""
    making.cancel()
    try:
        userns = await making
    except BaseException:  # noqa: BLE001 - cancelled or failed: no helper runs
        return
    await userns.close()


async def _no_wait(_max_wait: float) -> None:
    return None


def _is_root(lower: Path) -> bool:
    """``lower`` is a template root: a real directory with a real ``etc`` directory
    (no link in it followed: a Dockerfile template's root is its author's)."""
    try:
        with RootDir.open(lower) as root:
            return stat.S_ISDIR(root.lstat("etc").st_mode)
    except OSError:
        return False


def allocated(path: Path) -> int:
    """Bytes a (sparse) file occupies on its filesystem."""
    return os.stat(path).st_blocks * 512


def has_run_state(paths: SandboxPaths) -> bool:
    """Whether anything of a running sandbox is left: its config, its disk or root mounted."""
    return paths.config.exists() or os.path.ismount(paths.disk) or os.path.ismount(paths.rootfs)


def _park_host_state(paths: SandboxPaths) -> None:
    devices = _disk_devices(paths)
    mounts.unmount_all(paths.dir)
    loopdev.detach_backing(paths.disk_image, devices)
    loopdev.wait_released(paths.disk_image, devices=devices)  # a wake mounts the image again
    cgroups.remove(CGROUP_PARENT, paths.id)
    bundle.remove_run_files(paths)
    with contextlib.suppress(FileNotFoundError):
        paths.sysfs.rmdir()


def _disk_devices(paths: SandboxPaths) -> list[str] | None:
    """The loop device of the sandbox's mounted disk, looked at instead of every loop
    device of the host (O(1), not O(n) in the sandboxes); None (all of them) when its
    disk is not mounted (a crash may have left a device bound without its mount)."""
    device = loopdev.mounted_device(paths.disk)
    return [device] if device is not None else None


def _close_run_files(written: tuple[socket.socket, int]) -> None:
    """Close what ``bundle.write`` returned to a create cancelled meanwhile: the agent's
    log is on the sandbox's disk, and an fd of it left open would hold the disk."""
    listener, log_fd = written
    listener.close()
    os.close(log_fd)


def _remove_host_state(paths: SandboxPaths) -> None:
    devices = _disk_devices(paths)
    # Its known mount points, each checked with statx: no read of the node's mount table
    # (thousands of lines at a thousand sandboxes) unless something else is mounted there
    # (remove_tree refuses then) or the kernel cannot tell.
    if not mounts.unmount_points([paths.sysfs, paths.rootfs, paths.disk]):
        mounts.unmount_all(paths.dir)
    loopdev.detach_backing(paths.disk_image, devices)
    if not loopdev.wait_released(paths.disk_image, devices=devices):
        log.warning("a loop device of %s is still bound; the kernel frees it later", paths.id)
    cgroups.remove(CGROUP_PARENT, paths.id)
    owners.release(paths)
    try:
        bundle.remove_tree(paths.dir)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        mounts.unmount_all(paths.dir)  # a mount of no known point (a crash's leftover)
        bundle.remove_tree(paths.dir)
