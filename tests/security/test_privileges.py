"""Privileges: what sandbox code (root inside, in its own user namespace) may not do.

Every privileged system call is tried for real, from python3's ctypes in the attacker's
sandbox, each in a child process of its own (so one that wrongly succeeded cannot change
what the next one sees): mounts, namespaces, modules, kexec, keyrings, BPF, perf, raw
sockets, device nodes, the chroot escape, ptrace of a process outside, reboot, clock and
host name, cgroup release agents, sysctls. Each case asserts the call failed with the
error the design promises (seccomp's EPERM, or the read-only mount's EROFS), and that
the host's own settings it aimed at (host name, clock, ``core_pattern``, cgroup release
agents) are as they were, and the other org's sandbox still works.

One exec runs all the system calls (the module's ``attempts`` fixture); a failure names
the attack by its case id.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import SecurityServer, Tenant

CANARY = Path("/var/tmp/corral-security-canary")

# Each attempt: ``name: python expression`` evaluated in a fresh child; it returns
# (return value, errno) of a raw system call, or raises OSError.
_ATTEMPTS = r"""
import ctypes, errno, json, os, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
HOST_PID = int(sys.argv[1]) if len(sys.argv) > 1 else 0
CANARY = sys.argv[2] if len(sys.argv) > 2 else "/nonexistent"

def arg(a):
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    if isinstance(a, int):
        return ctypes.c_long(a)
    return a

def sc(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    return ret, ctypes.get_errno()

def buf(size, fields=()):
    b = ctypes.create_string_buffer(size)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, b, offset, value)
    return b

def chroot_escape():
    os.makedirs("/tmp/jail", exist_ok=True)
    os.chroot("/tmp/jail")  # cwd stays outside the new root: the classic escape
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    # where did we land? the sandbox's own root has the agent; the host has the canary
    return (1 if os.path.exists(CANARY) else 0), (0 if os.path.exists("/opt/corral") else 1)

def clock_settime():
    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
    now = time.time()
    ts = Timespec(int(now), int((now % 1) * 1e9))  # the time it is: harmless if it worked
    return sc(227, 0, ctypes.byref(ts))

os.makedirs("/tmp/m", exist_ok=True)
MS_BIND, MS_REC = 4096, 16384
ATTEMPTS = {
    "mount_tmpfs": lambda: sc(165, b"none", b"/tmp/m", b"tmpfs", 0, 0),
    "mount_bind_root": lambda: sc(165, b"/", b"/tmp/m", 0, MS_BIND | MS_REC, 0),
    "mount_proc": lambda: sc(165, b"proc", b"/tmp/m", b"proc", 0, 0),
    "mount_cgroup_release_agent": lambda: sc(165, b"cgroup", b"/tmp/m", b"cgroup", 0, b"rdma"),
    "umount_masked_kcore": lambda: sc(166, b"/proc/kcore", 2),
    "umount_proc_sys": lambda: sc(166, b"/proc/sys", 2),
    "fsopen_tmpfs": lambda: sc(430, b"tmpfs", 0),
    "open_tree_clone": lambda: sc(428, -100, b"/", 1 | 0x8000),
    "pivot_root": lambda: sc(155, b".", b"."),
    "unshare_user": lambda: sc(272, 0x10000000),
    "unshare_mount": lambda: sc(272, 0x00020000),
    "unshare_net": lambda: sc(272, 0x40000000),
    "clone_new_user": lambda: (lambda r: os._exit(0) if r[0] == 0 else r)(sc(56, 0x10000000 | 17, 0, 0, 0, 0)),
    "setns_pid1_mnt": lambda: sc(308, os.open("/proc/1/ns/mnt", os.O_RDONLY), 0),
    "kexec_load": lambda: sc(246, 0, 0, 0, 0),
    "kexec_file_load": lambda: sc(320, -1, -1, 0, b"", 0),
    "init_module": lambda: sc(175, b"\0" * 64, 64, b""),
    "finit_module": lambda: sc(313, os.open("/dev/null", os.O_RDONLY), b"", 0),
    "delete_module": lambda: sc(176, b"loop", 0),
    "keyctl": lambda: sc(250, 0, -3, 1),
    "add_key": lambda: sc(248, b"user", b"corral", b"secret", 6, -3),
    "bpf_map_create": lambda: sc(321, 0, buf(72, [(0, "I", 2), (4, "I", 4), (8, "I", 4), (12, "I", 1)]), 72),
    "perf_event_open": lambda: sc(298, buf(128, [(0, "I", 1), (4, "I", 128)]), 0, -1, -1, 0),
    "userfaultfd": lambda: sc(323, 0),
    "io_uring_setup": lambda: sc(425, 1, buf(120)),
    "raw_socket_icmp": lambda: (socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), (0, 0))[1],
    "packet_socket": lambda: (socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0), (0, 0))[1],
    "mknod_block_device": lambda: (os.mknod("/tmp/sda", 0o60600, os.makedev(8, 0)), (0, 0))[1],
    "mknod_dev_mem": lambda: (os.mknod("/tmp/mem", 0o20600, os.makedev(1, 1)), (0, 0))[1],
    "ptrace_attach_host_process": lambda: sc(101, 16, HOST_PID, 0, 0),
    "kill_host_process": lambda: sc(62, HOST_PID, 0),
    "reboot": lambda: sc(169, 0xFEE1DEAD, 672274793, 0, 0),
    "sethostname": lambda: sc(170, b"pwned", 5),
    "clock_settime": clock_settime,
    "iopl": lambda: sc(172, 3),
    "ioperm": lambda: sc(173, 0x80, 1, 1),
    "swapon": lambda: sc(167, b"/tmp/m", 0),
    "acct": lambda: sc(163, b"/tmp/acct"),
    "syslog_read_kernel_log": lambda: sc(103, 3, buf(4096), 4096),
    "chroot_escape": chroot_escape,
}
results = {}
for name, attempt in ATTEMPTS.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            ret, err = attempt()
            out = {"ret": ret, "errno": errno.errorcode.get(err, str(err)) if err else ""}
        except OSError as exc:
            out = {"ret": -1, "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}
        except Exception as exc:
            out = {"ret": -1, "errno": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    results[name] = json.loads(data or b'{"ret": null, "errno": "child died"}')
print(json.dumps(results))
"""

EPERM = {"EPERM"}
# what each attack must fail with (seccomp answers EPERM; a few calls are refused by
# the capability check or the namespace first, which is just as final)
EXPECTED: dict[str, set[str]] = {
    "mount_tmpfs": EPERM,
    "mount_bind_root": EPERM,
    "mount_proc": EPERM,
    "mount_cgroup_release_agent": EPERM,
    "umount_masked_kcore": EPERM,
    "umount_proc_sys": EPERM,
    "fsopen_tmpfs": EPERM | {"ENOSYS"},
    "open_tree_clone": EPERM | {"ENOSYS"},
    "pivot_root": EPERM,
    "unshare_user": EPERM,
    "unshare_mount": EPERM,
    "unshare_net": EPERM,
    "clone_new_user": EPERM,
    "setns_pid1_mnt": EPERM | {"EACCES"},  # the agent is not dumpable: its ns links do not open
    "kexec_load": EPERM,
    "kexec_file_load": EPERM,
    "init_module": EPERM,
    "finit_module": EPERM,
    "delete_module": EPERM,
    "keyctl": EPERM,
    "add_key": EPERM,
    "bpf_map_create": EPERM,
    "perf_event_open": EPERM | {"EACCES"},
    "userfaultfd": EPERM,
    "io_uring_setup": EPERM | {"ENOSYS"},
    "raw_socket_icmp": EPERM,
    "packet_socket": EPERM,
    "mknod_block_device": EPERM,
    "mknod_dev_mem": EPERM,
    "ptrace_attach_host_process": {"ESRCH"},  # no process outside is even visible
    "kill_host_process": {"ESRCH"},
    "reboot": EPERM,
    "sethostname": EPERM,
    "clock_settime": EPERM,
    "iopl": EPERM,
    "ioperm": EPERM,
    "swapon": EPERM,
    "acct": EPERM,
    "syslog_read_kernel_log": EPERM,
}


def _host_state() -> dict[str, Any]:
    """What the attacks aim at on the host: every value must be the same afterwards."""
    agents = {str(p): p.read_text() for p in Path("/sys/fs/cgroup").glob("*/release_agent") if p.is_file()}
    return {
        "hostname": socket.gethostname(),
        "core_pattern": Path("/proc/sys/kernel/core_pattern").read_text(),
        "release_agents": agents,
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


@pytest.fixture(scope="module")
def host_before() -> dict[str, Any]:
    return _host_state()


@pytest.fixture(scope="module")
def attempts(
    alpha: Tenant,
    beta: Tenant,
    attacker_box: str,
    bystander_box: str,
    security_server: SecurityServer,
    host_before: dict[str, Any],
) -> Iterator[dict[str, dict[str, Any]]]:
    CANARY.write_text("host canary\n")
    started = time.time()
    pid = security_server.pid  # the process a sandbox would most like to reach
    encoded = base64.b64encode(_ATTEMPTS.encode()).decode()
    result = alpha.run(
        attacker_box,
        f"echo {encoded} | base64 -d > /tmp/attempts.py && python3 /tmp/attempts.py {pid} {CANARY}",
    )
    assert result["exitCode"] == 0, result
    found: dict[str, dict[str, Any]] = json.loads(result["stdout"])
    found["_clock"] = {"before": started, "after": time.time()}
    # every attack above ran in that one exec: whether anyone noticed is checked once
    after = beta.run(bystander_box, "echo alive", timeout=30)
    found["_unnoticed"] = {"server": security_server.healthy(), "bystander": after["stdout"] == "alive\n"}
    yield found
    CANARY.unlink(missing_ok=True)


@pytest.mark.parametrize("attack", sorted(EXPECTED))
def test_privileged_system_call_fails(
    attack: str, attempts: dict[str, dict[str, Any]], host_before: dict[str, Any]
) -> None:
    outcome = attempts[attack]
    assert outcome["ret"] == -1 and outcome["errno"] in EXPECTED[attack], f"{attack}: {outcome}"
    assert _host_state() == host_before
    assert attempts["_unnoticed"] == {"server": True, "bystander": True}


def test_chroot_escape_lands_in_the_sandboxs_own_root(
    attempts: dict[str, dict[str, Any]], unnoticed: Callable[[], None]
) -> None:
    """CAP_SYS_CHROOT is granted, so the classic escape "works": it lands at the root of
    the sandbox's mount namespace, which is its own root, never the host's."""
    outcome = attempts["chroot_escape"]
    assert outcome == {"ret": 0, "errno": ""}, f"chroot escape saw the host: {outcome}"
    unnoticed()


def test_clock_is_not_the_sandboxs_to_set(attempts: dict[str, dict[str, Any]]) -> None:
    clock = attempts["_clock"]
    assert abs(time.time() - clock["after"]) < 120  # the host's clock did not jump
    assert attempts["clock_settime"]["errno"] == "EPERM"


def test_capability_sets_are_minimal(alpha: Tenant, attacker_box: str) -> None:
    """/proc/self/status: no admin, module, raw-network, mknod, ptrace, boot or time
    capability in any set, no_new_privs on, seccomp filtering."""
    status = alpha.run(attacker_box, "cat /proc/self/status")["stdout"]
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    forbidden = {
        "CAP_DAC_READ_SEARCH": 2,
        "CAP_LINUX_IMMUTABLE": 9,
        "CAP_NET_ADMIN": 12,
        "CAP_NET_RAW": 13,
        "CAP_IPC_LOCK": 14,
        "CAP_SYS_MODULE": 16,
        "CAP_SYS_RAWIO": 17,
        "CAP_SYS_PTRACE": 19,
        "CAP_SYS_ADMIN": 21,
        "CAP_SYS_BOOT": 22,
        "CAP_SYS_NICE": 23,
        "CAP_SYS_RESOURCE": 24,
        "CAP_SYS_TIME": 25,
        "CAP_MKNOD": 27,
        "CAP_AUDIT_WRITE": 29,
        "CAP_AUDIT_CONTROL": 30,
        "CAP_MAC_ADMIN": 33,
        "CAP_SYSLOG": 34,
        "CAP_BPF": 39,
        "CAP_PERFMON": 38,
        "CAP_CHECKPOINT_RESTORE": 40,
    }
    for kind in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        value = int(fields[kind].strip(), 16)
        held = [name for name, bit in forbidden.items() if value >> bit & 1]
        assert held == [], f"{kind} holds {held}"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"


def test_setuid_binary_gives_no_root_under_no_new_privs(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    """A setuid-root copy of ``id`` run by an unprivileged user stays that user."""
    result = alpha.run(
        attacker_box,
        "cp /usr/bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id && ls -l /tmp/suid-id >&2 && "
        "setpriv --reuid 1000 --regid 1000 --clear-groups /tmp/suid-id -u",
    )
    assert result["exitCode"] == 0 and "rws" in result["stderr"], result
    assert result["stdout"].strip() == "1000", result
    unnoticed()


@pytest.mark.parametrize(
    "target",
    [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/kernel/modprobe",
        "/proc/sysrq-trigger",
        "/proc/sys/net/ipv4/ip_forward",
        "/sys/kernel/uevent_helper",
        "/sys/fs/cgroup/memory/release_agent",
        "/sys/fs/cgroup/memory/notify_on_release",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/pids/pids.max",
    ],
)
def test_kernel_and_cgroup_settings_are_read_only(
    target: str,
    alpha: Tenant,
    attacker_box: str,
    host_before: dict[str, Any],
    unnoticed: Callable[[], None],
) -> None:
    """sysctls, sysrq, the uevent helper, the cgroup release agent (the CVE-2022-0492
    escape) and the sandbox's own cgroup limits: writes fail, nothing changes."""
    before = alpha.run(attacker_box, f"cat {target} 2>&1")["stdout"]
    value = "|/tmp/pwn %p" if "pattern" in target or "agent" in target or "helper" in target else "1"
    result = alpha.run(attacker_box, f"printf '%s\\n' '{value}' > {target}")
    assert result["exitCode"] != 0, f"writing {target} succeeded"
    assert alpha.run(attacker_box, f"cat {target} 2>&1")["stdout"] == before
    assert _host_state() == host_before
    unnoticed()


def test_cgroup_escape_by_new_cgroup_fails(
    alpha: Tenant, attacker_box: str, host_before: dict[str, Any], unnoticed: Callable[[], None]
) -> None:
    """No new cgroup, no move of the shell to the hierarchy's root."""
    result = alpha.run(
        attacker_box,
        "mkdir /sys/fs/cgroup/memory/escape; echo mkdir=$?; "
        "echo $$ > /sys/fs/cgroup/memory/cgroup.procs; echo procs=$?; "
        "echo $$ > /sys/fs/cgroup/pids/cgroup.procs; echo pids=$?",
    )
    assert "mkdir=0" not in result["stdout"], result
    # writing one's own pid to one's own cgroup is allowed, but it moves nothing: the
    # sandbox's cgroup root is its own cgroup (cgroup namespace)
    limit = alpha.run(attacker_box, "cat /sys/fs/cgroup/pids/pids.max")["stdout"].strip()
    assert limit not in ("", "max"), f"the shell escaped its pids limit: {limit!r}"
    assert _host_state() == host_before
    unnoticed()
