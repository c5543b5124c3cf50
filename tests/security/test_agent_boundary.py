"""The agent boundary: the code a sandbox runs cannot reach into its agent (PID 1).

The agent runs every command as a child, as the same root of the same user namespace;
what keeps the children out is that the agent is not dumpable, its ids cannot be
matched, and no sandbox process holds CAP_SYS_PTRACE or CAP_SYS_RESOURCE
(``sandbox_agent.shield``, docs/security.md "The agent boundary"). Each attack below is
made as root inside a real sandbox with python3 and ctypes, and must fail with EPERM
(or EACCES where the kernel says so) while the agent keeps answering the host.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

from tests.security.conftest import SecurityServer, Tenant

# Each probe prints one JSON object: attack name -> "ok" (it worked) or the errno name.
PROBE = textwrap.dedent(
    r"""
    import ctypes, errno, json, os, struct
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    out = {}

    def failed(name, code=None):
        code = ctypes.get_errno() if code is None else code
        out[name] = errno.errorcode.get(code, str(code))

    def call(name, *args):
        ctypes.set_errno(0)
        result = libc.syscall(*args)
        if result < 0:
            failed(name)
        else:
            out[name] = "ok"
        return result

    out["uid"] = os.getuid()
    pidfd = call("pidfd_open", 434, 1, 0)
    if pidfd >= 0:
        for target in range(3, 8):
            fd = call(f"pidfd_getfd {target}", 438, pidfd, target, 0)
            if fd >= 0:
                import socket
                try:
                    s = socket.socket(fileno=fd)
                    out[f"pidfd_getfd {target}"] = "ok: " + repr(s.getsockname())
                except OSError as exc:
                    out[f"pidfd_getfd {target}"] = "ok: " + str(exc)
    else:
        out.pop("pidfd_open")
        out["pidfd_open failed"] = errno.errorcode.get(ctypes.get_errno())

    ctypes.set_errno(0)
    if libc.ptrace(0x4206, 1, None, None) == 0:  # PTRACE_SEIZE
        out["ptrace seize"] = "ok"
        out["ptrace interrupt"] = "ok" if libc.ptrace(0x4207, 1, None, None) == 0 else "failed"
        os.waitpid(1, 0x40000000)  # __WALL
        libc.ptrace(17, 1, None, None)  # PTRACE_DETACH
    else:
        failed("ptrace seize")
    ctypes.set_errno(0)
    if libc.ptrace(16, 1, None, None) == 0:  # PTRACE_ATTACH
        out["ptrace attach"] = "ok"
        os.waitpid(1, 0x40000000)
        libc.ptrace(17, 1, None, None)
    else:
        failed("ptrace attach")

    for path in ("/proc/1/mem", "/proc/1/environ", "/proc/1/maps", "/proc/1/fdinfo/3",
                 "/proc/1/stack", "/proc/1/syscall", "/proc/1/auxv"):
        try:
            with open(path, "rb") as f:
                f.read(1)
            out[path] = "ok"
        except OSError as exc:
            failed(path, exc.errno)
    for path in ("/proc/1/fd/3", "/proc/1/cwd", "/proc/1/root", "/proc/1/exe", "/proc/1/ns/mnt"):
        try:
            out[path] = "ok: " + os.readlink(path)
        except OSError as exc:
            failed(path, exc.errno)

    buf = ctypes.create_string_buffer(8)
    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    local = iovec(ctypes.cast(buf, ctypes.c_void_p), 8)
    remote = iovec(0x400000, 8)
    ctypes.set_errno(0)
    if libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) < 0:
        code = ctypes.get_errno()
        out["process_vm_readv"] = "ok: reached" if code == errno.EFAULT else errno.errorcode[code]
    else:
        out["process_vm_readv"] = "ok"

    rlim = (ctypes.c_uint64 * 2)(64, 64)
    ctypes.set_errno(0)
    if libc.prlimit(1, 7, ctypes.byref(rlim), None) == 0:  # RLIMIT_NOFILE of the agent
        out["prlimit nofile"] = "ok"
    else:
        failed("prlimit nofile")
    call("kcmp", 312, 1, os.getpid(), 0, 3, 0)  # KCMP_FILE: is the agent's fd 3 my fd 0?
    print(json.dumps(out))
    """
)

DENIED = {"EPERM", "EACCES"}

# Sandbox code may still trace what it starts itself: the agent's commands are dumpable
# again from their execve, so strace, gdb and py-spy work on them.
OWN_CHILD = textwrap.dedent(
    r"""
    import ctypes, os, subprocess, time
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    child = subprocess.Popen(["sleep", "30"])
    # until it has exec'd: its new name is set a moment before its new environment
    while open(f"/proc/{child.pid}/comm").read() != "sleep\n" or not open(f"/proc/{child.pid}/environ", "rb").read():
        time.sleep(0.01)
    seized = libc.ptrace(0x4206, child.pid, None, None)  # PTRACE_SEIZE
    print(seized, ctypes.get_errno(), open(f"/proc/{child.pid}/environ", "rb").read().count(b"PATH="))
    child.kill()
    """
)


def _attack(tenant: Tenant, sandbox_id: str) -> dict[str, Any]:
    answer = tenant.python(sandbox_id, PROBE)
    assert answer["exitCode"] == 0, answer
    result: dict[str, Any] = json.loads(answer["stdout"].strip().splitlines()[-1])
    return result


def test_sandbox_code_cannot_reach_into_its_agent(
    alpha: Tenant, attacker_box: str, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    result = _attack(alpha, attacker_box)
    assert result.pop("uid") == 0  # root of the sandbox, with every capability it has
    assert result.pop("pidfd_open") == "ok"  # a pidfd of the agent is harmless by itself
    assert {name: code for name, code in result.items() if code not in DENIED} == {}
    assert len(result) == 22, result  # every attack was made

    # the agent still answers the host, and answers right
    with alpha.http() as http:
        written = http.put(
            f"/sandboxes/{attacker_box}/files", params={"path": "/tmp/after-attack"}, content=b"still mine"
        )
        assert written.status_code == 204, written.text
        read = http.get(f"/sandboxes/{attacker_box}/files", params={"path": "/tmp/after-attack"})
    assert read.status_code == 200 and read.content == b"still mine"
    after = alpha.run(attacker_box, "echo alive; grep ^Gid: /proc/1/status")
    assert after["exitCode"] == 0 and after["stdout"].startswith("alive\n"), after
    assert after["stdout"].split()[1:] == ["Gid:", "0", "0", "65534", "0"]  # saved gid: nogroup
    # nor is the socket's host path anywhere the sandbox can look: it was bound in the
    # host's network namespace, whose unix sockets the sandbox's /proc/net/unix omits
    listed = alpha.run(attacker_box, "cat /proc/net/unix")["stdout"]
    assert "agent.sock" not in listed and str(security_server.data_dir) not in listed
    unnoticed()


def test_sandbox_code_still_traces_its_own_processes(alpha: Tenant, attacker_box: str) -> None:
    answer = alpha.python(attacker_box, OWN_CHILD)
    assert answer["exitCode"] == 0, answer
    assert answer["stdout"].split() == ["0", "0", "1"]
