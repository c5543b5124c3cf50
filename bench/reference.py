"""The references corral is measured against, on the same root filesystem.

``RawRunc`` is the least a runc-based sandbox can do: per container an overlay
(template root as lower, a fresh upper), a ``config.json`` written by hand, then
``runc run -d`` of an idle init; ``runc exec <id> true`` to run a command and
``runc delete -f`` to end it. Its config has the isolation corral's design asks for
(own pid/net/ipc/uts/mount namespaces, a user namespace when the root is owned by a
mapped uid range, memory and pids limits, a seccomp filter, the usual capability set)
but no disk image, no network devices and no agent: its init is ``sleep``. The seccomp
filter is corral's own by default, so the comparison is of everything else (the
containers' default profile costs runc 10-15 ms more per run and per exec).

``Podman`` imports the same root as an image (owners shifted back to 0 so it looks
like any image) and drives ``podman run`` / ``podman exec`` / ``podman rm``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import itertools
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from memory import CGROUP_ROOT, ContainerMemory, container_memory
from proc import CommandFailed, run, run_detached, run_sync

CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
]
SECCOMP_SOURCE = Path("/usr/share/containers/seccomp.json")
PODMAN_ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    if _libc().mount(b"overlay", str(target).encode(), b"overlay", 0, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay on {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    _libc().umount2(str(target).encode(), MNT_DETACH)


def mounted_under(prefix: Path) -> list[Path]:
    """Mount points at or below ``prefix``, deepest first."""
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(prefix) or point.startswith(str(prefix) + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


SECCOMP_CHOICES = ("corral", "containers", "none")


def reference_seccomp(choice: str) -> tuple[dict[str, Any] | None, str]:
    """The profile for the raw runc reference and a word saying which it is.

    ``corral``: the profile corral gives its sandboxes (same filter, so the comparison
    is of everything else), falling back to ``containers`` when corral is not
    importable; ``containers``: the containers' default profile (what podman loads);
    ``none``: no filter.
    """
    if choice == "corral":
        try:
            from corral.runtime.seccomp import default_profile
        except ImportError:
            choice = "containers"
        else:
            return default_profile(), "corral's seccomp profile"
    if choice == "containers":
        profile = seccomp_profile(CAPS)
        return profile, "containers' default seccomp profile" if profile else "no seccomp (no profile found)"
    return None, "no seccomp"


def seccomp_profile(caps: list[str], arch: str = "amd64") -> dict[str, Any] | None:
    """The containers' default seccomp profile in OCI form, resolved for ``caps``."""
    if not SECCOMP_SOURCE.exists():
        return None
    src = json.loads(SECCOMP_SOURCE.read_text())
    arches: list[str] = []
    for entry in src.get("archMap") or []:
        if entry["architecture"] == "SCMP_ARCH_X86_64":
            arches = [entry["architecture"], *entry.get("subArchitectures", [])]
    rules: list[dict[str, Any]] = []
    for rule in src["syscalls"]:
        inc = rule.get("includes") or {}
        exc = rule.get("excludes") or {}
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if exc.get("arches") and arch in exc["arches"]:
            continue
        if inc.get("caps") and not set(inc["caps"]) <= set(caps):
            continue
        if exc.get("caps") and set(exc["caps"]) & set(caps):
            continue
        out: dict[str, Any] = {"names": rule["names"], "action": rule["action"]}
        if rule.get("args"):
            out["args"] = rule["args"]
        if "errnoRet" in rule:
            out["errnoRet"] = rule["errnoRet"]
        rules.append(out)
    profile: dict[str, Any] = {
        "defaultAction": src["defaultAction"],
        "architectures": arches,
        "syscalls": rules,
    }
    if "defaultErrnoRet" in src:
        profile["defaultErrnoRet"] = src["defaultErrnoRet"]
    return profile


def oci_config(
    args: list[str],
    cgroups_path: str,
    uid_base: int | None,
    uid_count: int,
    seccomp: dict[str, Any] | None,
    memory_mb: int = 512,
    pids: int = 512,
) -> dict[str, Any]:
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    linux: dict[str, Any] = {
        "cgroupsPath": cgroups_path,
        "namespaces": namespaces,
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}],
            "memory": {"limit": memory_mb * 1024 * 1024},
            "pids": {"limit": pids},
        },
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    }
    if uid_base is not None:
        namespaces.append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": uid_base, "size": uid_count}]
        linux["uidMappings"] = mapping
        linux["gidMappings"] = mapping
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
            "cwd": "/",
            "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
        ],
        "linux": linux,
    }


def rootfs_uid_base(rootfs: Path) -> int | None:
    """The host uid that owns the root (the user-namespace base), None for plain root."""
    uid = rootfs.stat().st_uid
    return uid if uid != 0 else None


def remove_cgroups(name: str) -> None:
    """rmdir ``/<name>`` and everything under it in every cgroup hierarchy."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


class RawRunc:
    """runc driven directly; see the module docstring."""

    name = "runc"

    def __init__(
        self, rootfs: Path, token: str, runc: str = "runc", uid_count: int = 65536, seccomp: str = "corral"
    ) -> None:
        self.rootfs = rootfs
        self.token = token
        self.runc = runc
        self.uid_base = rootfs_uid_base(rootfs)
        self.uid_count = uid_count
        self.seccomp, seccomp_label = reference_seccomp(seccomp)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{token}-runc-"))
        self.workdir.chmod(0o711)  # the mapped root must reach its bundle
        self.state = self.workdir / "state"
        self._ids = itertools.count(1)
        userns = f"userns base {self.uid_base}" if self.uid_base is not None else "no userns"
        self.label = (
            f"overlay on {rootfs} + hand-written config ({userns}, "
            f"{seccomp_label}) + `runc run -d` of `sleep infinity`; "
            "`runc exec <id> true`; `runc delete -f`"
        )

    def _runc(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.state), *args]

    async def setup(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)

    async def create(self) -> str:
        cid = f"{self.token}-{next(self._ids)}"
        bundle = self.workdir / cid
        upper, work, root = bundle / "upper", bundle / "work", bundle / "rootfs"
        for d in (upper, work, root):
            d.mkdir(parents=True)
        if self.uid_base is not None:
            os.chown(upper, self.uid_base, self.uid_base)
        mount_overlay(self.rootfs, upper, work, root)
        config = oci_config(
            ["sleep", "infinity"], f"/{self.token}/{cid}", self.uid_base, self.uid_count, self.seccomp
        )
        (bundle / "config.json").write_text(json.dumps(config))
        log = bundle / "runc.log"
        rc = await run_detached(self._runc("--log", str(log), "run", "-d", "--bundle", str(bundle), cid))
        if rc != 0:
            detail = log.read_text()[-600:] if log.exists() else ""
            await self.kill(cid)
            raise CommandFailed(f"runc run {cid} exited {rc}: {detail}")
        return cid

    async def exec_true(self, sandbox_id: str) -> None:
        (await run(self._runc("exec", sandbox_id, "true"))).check()

    async def kill(self, sandbox_id: str) -> None:
        await run(self._runc("delete", "-f", sandbox_id))
        bundle = self.workdir / sandbox_id
        unmount(bundle / "rootfs")
        await asyncio.to_thread(shutil.rmtree, bundle, True)

    async def memory(self, sandbox_ids: list[str]) -> list[ContainerMemory]:
        out: list[ContainerMemory] = []
        for cid in sandbox_ids:
            state = json.loads((await run(self._runc("state", cid))).check().stdout)
            out.append(container_memory(int(state["pid"])))
        return out

    async def close(self) -> None:
        if self.state.exists():
            listed = run_sync(self._runc("list", "-q"))
            for cid in listed.stdout.decode().split():
                run_sync(self._runc("delete", "-f", cid))
        for point in mounted_under(self.workdir):
            unmount(point)
        shutil.rmtree(self.workdir, ignore_errors=True)
        remove_cgroups(self.token)


def _shift_owner(base: int) -> Any:
    def shift(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.uid >= base:
            info.uid -= base
        if info.gid >= base:
            info.gid -= base
        info.uname = info.gname = ""
        return info

    return shift


def import_rootfs(rootfs: Path, image: str, uid_base: int | None) -> None:
    """Stream a tar of ``rootfs`` (owners shifted back by ``uid_base``) into
    ``podman import``."""
    with (
        tempfile.TemporaryFile() as errors,
        tempfile.TemporaryDirectory(prefix="corral-bench-import-") as tmp,
    ):
        # podman stages the layer in TMPDIR; keep it where this run cleans up
        env = {**os.environ, "TMPDIR": tmp}
        proc = subprocess.Popen(
            ["podman", "import", "-", image],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
        )
        assert proc.stdin is not None
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(os.listdir(rootfs)):
                    tar.add(rootfs / entry, arcname=entry, filter=_shift_owner(uid_base or 0))
        finally:
            proc.stdin.close()
            proc.wait(timeout=600)
        if proc.returncode != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace")[-400:]
            raise CommandFailed(f"podman import exited {proc.returncode}: {detail}")


class Podman:
    """podman on the same root, imported as an image for this run only."""

    name = "podman"

    def __init__(self, rootfs: Path, token: str) -> None:
        self.rootfs = rootfs
        self.token = token
        self.image = f"localhost/{token}:ref"
        self.label = (
            f"`podman import` of {rootfs}; `podman run -d {' '.join(PODMAN_ULIMITS)} <img> sleep infinity`; "
            "`podman exec <id> true`; `podman rm -f -t 0`; one-shot `podman run --rm <img> true`"
        )

    async def setup(self) -> None:
        await asyncio.to_thread(import_rootfs, self.rootfs, self.image, rootfs_uid_base(self.rootfs))

    def _run_args(self) -> list[str]:
        return ["--label", f"corral-bench={self.token}", *PODMAN_ULIMITS, self.image]

    async def create(self) -> str:
        done = (await run(["podman", "run", "-d", *self._run_args(), "sleep", "infinity"])).check()
        return done.stdout.decode().strip()

    async def one_shot(self) -> None:
        (await run(["podman", "run", "--rm", *self._run_args(), "true"])).check()

    async def exec_true(self, sandbox_id: str) -> None:
        (await run(["podman", "exec", sandbox_id, "true"])).check()

    async def kill(self, sandbox_id: str) -> None:
        (await run(["podman", "rm", "-f", "-t", "0", sandbox_id])).check()

    async def memory(self, sandbox_ids: list[str]) -> list[ContainerMemory]:
        out: list[ContainerMemory] = []
        for cid in sandbox_ids:
            fmt = "{{.State.Pid}} {{.State.ConmonPid}}"
            pid, conmon = (await run(["podman", "inspect", "--format", fmt, cid])).check().stdout.split()
            out.append(container_memory(int(pid), [int(conmon)]))
        return out

    async def close(self) -> None:
        listed = run_sync(["podman", "ps", "-aq", "--filter", f"label=corral-bench={self.token}"])
        ids = listed.stdout.decode().split()
        if ids:
            run_sync(["podman", "rm", "-f", "-t", "0", *ids], timeout=120)
        run_sync(["podman", "rmi", "-f", self.image], timeout=120)
