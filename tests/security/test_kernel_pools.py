"""Kernel pools: what one sandbox holds of the kernel's per-user counts is bounded per
sandbox, and neither another org's sandbox nor the host's root notices.

The kernel charges a user namespace's inotify instances, POSIX message-queue bytes and
queued signals to the namespace's owner as well; every sandbox's namespace is owned by
a host uid of its own (``corral.runtime.userns``), not by host root (docs/security.md,
"Kernel pools"). The attack: a sandbox's root, and other uids it switches to, take
every inotify instance, message queue and queued real-time signal they can and hold
them; meanwhile beta's sandbox and the host's root make their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import Tenant
from tests.support.conditions import eventually

MSGQUEUE_BYTES = 819_200  # the server's CORRAL_SANDBOX_MSGQUEUE_BYTES: the default
QUEUE = (10, 8192)  # each queue: maxmsg x msgsize, the kernel's default and maximum
HOLDER_UIDS = (0, 1000, 1001, 1002)

# Run by the sandbox's root: for each uid in turn (a child that switches to it), take
# inotify instances, watches (every instance on the same 2,000 files) and 80 KiB
# message queues until the kernel refuses, then queue
# SIGRTMIN to a child that blocks it until refused; report as JSON in /tmp/pools; hold.
HOLD = textwrap.dedent(
    """
    import ctypes, ctypes.util, json, os, signal, time
    libc = ctypes.CDLL(None, use_errno=True)
    rt = ctypes.CDLL(ctypes.util.find_library("rt"), use_errno=True)

    class Attr(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                    ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]

    rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(Attr)]
    O_RDWR, O_CREAT = 2, 0o100

    def take(uid):
        os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
        instances = []
        while len(instances) < 100000:
            fd = libc.inotify_init1(0)
            if fd < 0:
                break
            instances.append(fd)
        inotify, inotify_errno = len(instances), ctypes.get_errno()
        watches, watches_errno = 0, 0
        for fd in instances:  # every instance watches the same files: one watch each
            for path in FILES:
                if libc.inotify_add_watch(fd, path, 2) < 0:  # IN_MODIFY
                    watches_errno = ctypes.get_errno()
                    break
                watches += 1
            if watches_errno:
                break
        queues, attr = 0, Attr(0, %(maxmsg)d, %(msgsize)d, 0)
        while queues < 10000 and rt.mq_open(f"/hog-{uid}-{queues}".encode(), O_RDWR | O_CREAT, 0o600, ctypes.byref(attr)) >= 0:
            queues += 1
        return {"inotify": inotify, "inotify_errno": inotify_errno, "queues": queues,
                "queues_errno": ctypes.get_errno(), "watches": watches, "watches_errno": watches_errno}

    os.makedirs("/tmp/w", exist_ok=True)
    FILES = []
    for n in range(2000):
        open(f"/tmp/w/{n}", "w").close()
        FILES.append(f"/tmp/w/{n}".encode())

    report = {}
    for uid in %(uids)r:
        r, w = os.pipe()
        if os.fork() == 0:
            os.close(r)
            os.write(w, json.dumps(take(uid)).encode())
            os.close(w)
            time.sleep(600)
            os._exit(0)
        os.close(w)
        report[str(uid)] = json.loads(os.read(r, 4096))
        os.close(r)

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN})
    sink = os.fork()
    if sink == 0:
        time.sleep(600)
        os._exit(0)
    signals = 0
    while signals < 1000000 and libc.sigqueue(sink, signal.SIGRTMIN, ctypes.c_long(0)) == 0:
        signals += 1
    report["signals"], report["signals_errno"] = signals, ctypes.get_errno()
    with open("/tmp/pools.tmp", "w") as f:
        json.dump(report, f)
    os.rename("/tmp/pools.tmp", "/tmp/pools")
    time.sleep(600)
    """
) % {"uids": HOLDER_UIDS, "maxmsg": QUEUE[0], "msgsize": QUEUE[1]}

# What a bystander does (in beta's sandbox, and on the host): one inotify instance
# and a watch, one queue, one queued signal to itself, one POSIX timer (its signal is allocated up
# front); prints what each returned.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, os, signal
    libc = ctypes.CDLL(None, use_errno=True)
    rt = ctypes.CDLL(ctypes.util.find_library("rt"), use_errno=True)
    fd = libc.inotify_init1(0)
    print("inotify", fd, ctypes.get_errno() if fd < 0 else 0)
    w = libc.inotify_add_watch(fd, b"/tmp", 2)
    print("watch", w, ctypes.get_errno() if w < 0 else 0)
    rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    name = f"/probe-{os.getpid()}".encode()
    q = rt.mq_open(name, 2 | 0o100, 0o600, None)
    print("mqueue", q, ctypes.get_errno() if q < 0 else 0)
    rt.mq_unlink(name)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN})
    r = libc.sigqueue(os.getpid(), signal.SIGRTMIN, ctypes.c_long(0))
    print("signal", r, ctypes.get_errno() if r < 0 else 0)
    timer = ctypes.c_void_p()
    r = libc.timer_create(1, None, ctypes.byref(timer))  # CLOCK_MONOTONIC, SIGALRM
    print("timer", r, ctypes.get_errno() if r < 0 else 0)
    """
)


def _probe_works(output: str) -> bool:
    results = {line.split()[0]: line.split()[1:] for line in output.strip().splitlines()}
    return set(results) == {"inotify", "watch", "mqueue", "signal", "timer"} and all(
        int(value) >= 0 and errno == "0" for value, errno in results.values()
    )


def _host_limit(name: str) -> int:
    return int(Path(f"/proc/sys/fs/inotify/{name}").read_text())


@pytest.fixture
def pool_hog(alpha: Tenant) -> Iterator[dict[str, Any]]:
    """A sandbox of its own whose processes hold everything HOLD could take; what it
    reported."""
    sandbox_id = str(alpha.create(timeout=600)["sandboxID"])
    try:
        alpha.run(sandbox_id, f"cat > /tmp/hold.py <<'EOF'\n{HOLD}\nEOF")
        started = alpha.run(
            sandbox_id, "setsid python3 /tmp/hold.py </dev/null >/tmp/hold.log 2>&1 & echo started"
        )
        assert started["stdout"].strip() == "started", started

        def report() -> str:
            return str(alpha.run(sandbox_id, "cat /tmp/pools 2>/dev/null")["stdout"])

        eventually(
            report,
            30,
            lambda: f"the holder wrote no report: {alpha.run(sandbox_id, 'cat /tmp/hold.log')['stdout']}",
            0.2,
        )
        yield json.loads(report())
    finally:
        alpha.kill(sandbox_id)


def test_a_sandbox_cannot_take_the_kernel_pools_of_others(
    pool_hog: dict[str, Any], beta: Tenant, bystander_box: str, unnoticed: Callable[[], None]
) -> None:
    report = pool_hog
    per_uid = [report[str(uid)] for uid in HOLDER_UIDS]

    # inotify: all the sandbox's uids together stopped at the host's per-user limit
    # (the count of the sandbox's owner), however many uids took part
    instances = sum(int(taken["inotify"]) for taken in per_uid)
    assert instances == _host_limit("max_user_instances"), report
    assert {taken["inotify_errno"] for taken in per_uid} == {24}, report
    watches = sum(int(taken["watches"]) for taken in per_uid)
    assert watches == _host_limit("max_user_watches"), report
    assert {taken["watches_errno"] for taken in per_uid} - {0} == {28}, report  # ENOSPC

    # message queues: together at most the sandbox's bytes (each queue costs a little
    # more than maxmsg x msgsize), refused with EMFILE
    queues = sum(int(taken["queues"]) for taken in per_uid)
    assert queues == MSGQUEUE_BYTES // (QUEUE[0] * QUEUE[1]) - 1, report
    assert {taken["queues_errno"] for taken in per_uid} == {24}, report

    # queued signals: stopped (EAGAIN) at the namespace's bound, the host's RLIMIT_SIGPENDING
    pending = resource.getrlimit(resource.RLIMIT_SIGPENDING)[1]
    assert report.get("signals_errno") == 11 and 0 < int(report["signals"]) <= pending, report

    # another org's sandbox makes its own
    probe = beta.python(bystander_box, PROBE)
    assert probe["exitCode"] == 0 and _probe_works(probe["stdout"]), probe

    # and so does the host's root: this test, as root, in a process of its own
    host = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30, check=False
    )
    assert host.returncode == 0 and _probe_works(host.stdout), (host.stdout, host.stderr)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    os.close(fd)
    unnoticed()
