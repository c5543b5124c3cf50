"""The OCI bundle of one sandbox: its ``config.json`` and the files of its dir.

:func:`oci_config` (pure) turns a sandbox's id, limits and envs into the config runc
runs (DESIGN.md decision 1); :func:`make_dirs`, :func:`write`, :func:`remove_tree`
and :func:`tail` do the blocking file work on the dir (``layout.py`` says where
everything is; call them through ``asyncio.to_thread``). What the config asks of the
kernel:

* **User namespace**: container uids/gids 0..count-1 are host ``uid_base``.. on; the
  template root is owned by that range (see ``ownership.py``), so root inside owns its
  files and is an unprivileged uid on the host. The runtime makes the namespace, owned
  by a host uid of the sandbox's own, and runc joins it (``userns.py``: the kernel's
  per-user counts are then bounded per sandbox, not shared with the host's root).
* **Namespaces**: pid, ipc, uts, mount, cgroup and network. Without a network
  adapter the network namespace is created by runc, owned by the sandbox's user
  namespace, and runc brings ``lo`` up itself when it creates one (its "loopback"
  strategy): no hook, no extra process; ``sysfs`` is mounted natively (read-only) and
  shows only the sandbox's own interfaces. With a network adapter the sandbox is in
  the namespace the host made (owned by the host, so root inside cannot reconfigure
  it, nor mount sysfs: the runtime mounts one for it, see ``mounts.py``): runc is
  started in it and the sandbox inherits it (joining it by path from the host-made
  user namespace would be refused).
* **Cgroups** at ``/corral/<id>``: CPU quota = ``cpu_count`` CPUs, memory limit with
  memory+swap equal to it (no swap), pids limit, no device but runc's defaults. A
  CPU-time quota (``cpu_seconds``) is the annotation ``corral.cpu_seconds``, which the
  runtime enforces (``cpu_quota.py``).
* **Capabilities** (bounding = effective = permitted; none inheritable or ambient):
  Docker's default set minus MKNOD (device nodes cannot be made in a user namespace and
  the device cgroup denies them; FIFOs need no capability), NET_RAW (raw and packet
  sockets are a large kernel attack surface; ``ping`` still works through ICMP
  datagram sockets, enabled with ``net.ipv4.ping_group_range``) and AUDIT_WRITE (a
  non-initial user namespace cannot write to the audit log anyway). Neither
  SYS_PTRACE nor SYS_RESOURCE is in any set: the agent (PID 1) counts on it to keep the
  commands it runs out of itself (``sandbox_agent.shield``, docs/security.md, "The
  agent boundary").
* ``noNewPrivileges``, the seccomp allowlist of ``seccomp.py``, Docker's masked and
  read-only ``/proc`` paths.
* **Mounts**: proc, a small ``/dev`` tmpfs with its own devpts instance (``ptmxmode``
  0666, ``gid=5`` = tty inside, ``max=`` ``pty_max`` PTYs open at once, so one
  sandbox cannot use up the kernel's PTYs; docs/security.md, "PTYs"),
  ``/dev/shm`` (half the memory limit, charged to it: a sandbox that fills it still
  has memory for its agent, which the OOM killer would otherwise take), mqueue,
  read-only sysfs and cgroup, and the agent program read-only at
  ``/opt/corral/agent.py``. ``/etc/hostname``, ``/etc/hosts``
  and ``/etc/resolv.conf`` are per-sandbox files written into the sandbox's own upper
  layer by the runtime (so they are editable and count against its disk).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corral.domain import Limits
from corral.runtime import mounts
from corral.runtime.cpu_quota import ANNOTATION
from corral.runtime.layout import MAX_SOCKET_PATH, SandboxPaths
from corral.runtime.seccomp import default_profile

AGENT_PATH_INSIDE = "/opt/corral/agent.py"
# -X frozen_modules=on: the interpreter's start-up modules (os, codecs, io, abc, ...)
# from the copies built into it, not from the stdlib's .pyc files; Debian's python3
# leaves that off; measured in turns it saves ~0.8 ms of the agent's ~12 ms of CPU to
# start (an unknown -X option is ignored by a Python before 3.11).
PYTHON_FLAGS = ("-I", "-S", "-X", "frozen_modules=on")
AGENT_ARGS = ("python3", *PYTHON_FLAGS, AGENT_PATH_INSIDE, "--listen-fd", "3")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
# Should the host run out of memory (sandbox limits may add up to more than it has),
# sandbox processes go before the control plane; root inside cannot lower it.
OOM_SCORE_ADJ = 500
NOFILE_SOFT = 65_536  # high enough for servers, low enough for close-all-fds loops
NOFILE_HARD = 1_048_576

CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
)

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)

READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_MIB = 1024 * 1024


def _mounts(agent_path: str, shm_mb: int, sysfs_path: str | None, pty_max: int) -> list[dict[str, Any]]:
    nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"]
    if sysfs_path is None:
        sysfs = {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": [*nosuid_noexec_nodev, "ro"],
        }
    else:
        sysfs = {
            "destination": "/sys",
            "type": "bind",
            "source": sysfs_path,
            "options": ["rbind", "ro", *nosuid_noexec_nodev],
        }
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": nosuid_noexec_nodev},
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
            "options": [
                *("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
                f"max={pty_max}",
            ],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": [*nosuid_noexec_nodev, "mode=1777", f"size={shm_mb}m"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid_noexec_nodev},
        sysfs,
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": [*nosuid_noexec_nodev, "relatime", "ro"],
        },
        {
            "destination": AGENT_PATH_INSIDE,
            "type": "bind",
            "source": agent_path,
            "options": ["bind", "ro", "nosuid", "nodev"],
        },
    ]


def oci_config(
    *,
    sandbox_id: str,
    limits: Limits,
    envs: Mapping[str, str],
    agent_path: str,
    uid_base: int,
    uid_count: int,
    pty_max: int,
    nofile_hard: int = NOFILE_HARD,
    netns_path: str | None = None,
    sysfs_path: str | None = None,
    userns_path: str | None = None,
    cwd: str = "/root",
    user: str | None = None,
) -> dict[str, Any]:
    """The config.json of a sandbox whose root is ``rootfs/`` beside it.

    ``agent_path`` is the host file bind-mounted read-only at /opt/corral/agent.py; it
    and every directory above it must be readable by the mapped uids. ``nofile_hard``
    is capped by what the caller may grant (runc cannot raise it past its own limit).
    ``pty_max`` (1 or more) is how many PTYs the sandbox may hold open at once.
    Sandbox envs override the defaults (PATH, HOME, LANG).

    Without ``netns_path`` runc makes an empty network namespace (loopback only, up).
    With it the sandbox joins that namespace, made and wired by the host (its owner
    brings ``lo`` up and sets sysctls; the sandbox's root cannot), and ``sysfs_path``
    must be a read-only sysfs mounted for that namespace (``mounts.mount_sysfs_of_netns``).

    Without ``userns_path`` runc makes the user namespace (owned by the host's root, so
    what the sandbox holds of the kernel's per-user counts is charged to host root).
    With it the sandbox joins that namespace, made by the host with these same id maps
    and an owner of its own (``userns.py``), and the config sets no rlimits: runc's
    process must have ``nofile_limits`` for the sandbox to inherit. With both, the
    config names no network namespace and runc must be started in ``netns_path``: the
    sandbox inherits it (runc joins a user namespace before any other, and from a
    namespace the host's root does not own a host-owned network namespace cannot be
    joined).

    ``cwd`` is the agent's working directory (the default of commands); with ``user``
    (a Dockerfile's ``USER`` other than root) the agent, still root, runs commands as
    that user.
    """
    if (netns_path is None) != (sysfs_path is None):
        raise ValueError("netns_path and sysfs_path go together")
    if pty_max < 1:
        raise ValueError("pty_max must be 1 or more")
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", **envs}
    soft, hard = nofile_limits(nofile_hard)
    caps = list(CAPABILITIES)
    ids = [{"containerID": 0, "hostID": uid_base, "size": uid_count}]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [*AGENT_ARGS, *(("--user", user) if user else ())],
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            # runc sets them with prlimit(2), which needs CAP_SYS_RESOURCE over a user
            # namespace runc does not own: in a host-made one the process inherits them
            # from runc instead (``nofile_limits``, ``RuncBinary.run``).
            "rlimits": [] if userns_path else [{"type": "RLIMIT_NOFILE", "soft": soft, "hard": hard}],
            "noNewPrivileges": True,
            "oomScoreAdj": OOM_SCORE_ADJ,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": sandbox_id,
        "mounts": _mounts(agent_path, shm_mb(limits), sysfs_path, pty_max),
        "annotations": {"org.corral.sandbox": sandbox_id, **_quota_annotation(limits)},
        "linux": {
            "uidMappings": ids,
            "gidMappings": ids,
            # SysV shared memory dies with its last process (it outlived an OOM kill,
            # still charged to the sandbox); without a netns of ours, ping for every uid
            "sysctl": {
                "kernel.shm_rmid_forced": "1",
                **({} if netns_path else {"net.ipv4.ping_group_range": f"0 {uid_count - 1}"}),
            },
            "cgroupsPath": f"/corral/{sandbox_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}], **resources(limits)},
            "namespaces": [{"type": kind} for kind in ("pid", "ipc", "uts", "mount", "cgroup")]
            + [{"type": "user", "path": userns_path} if userns_path else {"type": "user"}]
            + _network_namespace(netns_path, userns_path),
            "seccomp": default_profile(),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def shm_mb(limits: Limits) -> int:
    """The size of a sandbox's ``/dev/shm``: half its memory limit (charged to it)."""
    return max(1, limits.memory_mb // 2)


def resources(limits: Limits) -> dict[str, Any]:
    """The cgroup limits of ``limits`` (OCI ``linux.resources`` but for devices)."""
    memory = limits.memory_mb * _MIB
    return {
        "memory": {"limit": memory, "swap": memory},
        "cpu": {"quota": limits.cpu_count * CPU_PERIOD_US, "period": CPU_PERIOD_US},
        "pids": {"limit": limits.pids},
    }


def _quota_annotation(limits: Limits) -> dict[str, str]:
    return {ANNOTATION: repr(limits.cpu_seconds)} if limits.cpu_seconds is not None else {}


def update(paths: SandboxPaths, limits: Limits) -> None:
    """Rewrite config.json (atomically) with ``limits``: its cgroup resources and CPU-time
    quota, as a create with them would have written it (a restarted corral reads the
    quota there)."""
    config = json.loads(paths.config.read_text())
    config["linux"]["resources"].update(resources(limits))
    annotations = {k: v for k, v in config.get("annotations", {}).items() if k != ANNOTATION}
    config["annotations"] = {**annotations, **_quota_annotation(limits)}
    tmp = paths.config.with_name(".config.json.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(config))  # json.dump encodes in Python: ~5x the CPU
    os.replace(tmp, paths.config)


def _network_namespace(netns_path: str | None, userns_path: str | None) -> list[dict[str, str]]:
    if netns_path is None:
        return [{"type": "network"}]
    return [] if userns_path else [{"type": "network", "path": netns_path}]


def nofile_limits(nofile_hard: int = NOFILE_HARD) -> tuple[int, int]:
    """The sandbox's RLIMIT_NOFILE (soft, hard) when the caller may grant ``nofile_hard``."""
    hard = max(1024, nofile_hard)
    return min(NOFILE_SOFT, hard), hard


def make_dirs(paths: SandboxPaths, data_dir: Path, group: int) -> None:
    """Create the sandbox dir (FileExistsError if it exists) and its mount points. The
    mapped root (host gid ``group``) must pass through the data dir, ``sandboxes/`` and
    the sandbox dir to reach rootfs/: those are root's, of that group, 0710 (no other
    host user reaches the sandbox's disk or root; ``corral.datadir``)."""
    paths.dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.dir.mkdir(mode=0o700)
    for directory in (data_dir, paths.dir.parent, paths.dir):
        found = os.lstat(directory)
        if found.st_gid != group or stat.S_IMODE(found.st_mode) != 0o710:
            os.chown(directory, -1, group, follow_symlinks=False)
            os.chmod(directory, 0o710)
    paths.disk.mkdir(mode=0o700)
    paths.rootfs.mkdir(mode=0o700)


def write(paths: SandboxPaths, config: dict[str, Any]) -> tuple[socket.socket, int]:
    """Write config.json (0600: it holds the sandbox's envs), bind and listen on the
    agent's socket (0600) and open the agent's log. Returns the listening socket and
    the log fd; the caller closes both once runc has them."""
    fd = os.open(paths.config, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(config))  # json.dump encodes in Python: ~5x the CPU
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _bind(listener, paths.socket)
        os.chmod(paths.socket, 0o600)
        listener.listen(128)
        log_fd = os.open(paths.agent_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except BaseException:
        listener.close()
        raise
    return listener, log_fd


def _bind(listener: socket.socket, path: Path) -> None:
    # sun_path holds 107 bytes; a longer path is reached through its directory's fd.
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        listener.bind(str(path))
        return
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        listener.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
    finally:
        os.close(dir_fd)


def remove_run_files(paths: SandboxPaths) -> None:
    """Remove what ``write`` and runc left for one run (config, socket, pid file), so the
    sandbox can be started again in the same dir; the disk stays."""
    for path in (paths.config, paths.socket, paths.pid_file):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_tree(directory: Path) -> None:
    """rm -rf that refuses (OSError EBUSY) to descend into anything still mounted at or
    below ``directory``. A missing dir is a no-op."""
    if _mounted_within(directory):
        raise OSError(errno.EBUSY, "still mounted", str(directory))
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)


def _mounted_within(directory: Path) -> bool:
    """Whether a dir at or below ``directory`` is the root of a mount: each dir's
    ``statx`` (a sandbox's dir holds a handful once its disk is unmounted), not the
    node's mount table (thousands of lines with a thousand sandboxes); the table only
    when the kernel cannot tell. Links are not followed."""
    for current, _dirs, _files in os.walk(directory):
        mounted = mounts.is_mount_root(current)
        if mounted is None:
            return bool(mounts.under(directory))
        if mounted:
            return True
    return False


def tail(path: Path, limit: int = 2000) -> str:
    """The last ``limit`` bytes of a log, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace").strip() or "(empty)"
    except OSError:
        return "(none)"
