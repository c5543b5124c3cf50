"""The default seccomp profile of every sandbox, as an OCI ``linux.seccomp`` object.

An allowlist in the spirit of Docker's default profile: everything not named below
fails with EPERM. What a sandbox is for (processes, files, sockets, PTYs, threads,
timers, IPC, ptrace of its own children) is allowed; what needs a capability we never
grant (mount, namespaces, modules, clock setting, swap, reboot, keyrings, BPF, perf,
userfaultfd, io_uring, kexec, quotas, open_by_handle_at) is not, so a kernel bug
behind one of those calls is out of reach even before the capability check.

Contracts:
  * ``clone`` is allowed only without namespace flags; ``clone3`` answers ENOSYS so
    libc falls back to ``clone`` (its flags live in memory seccomp cannot read).
  * ``unshare`` and ``setns`` are not allowed (no nested namespaces, as in Docker).
  * ``personality`` is allowed for the handful of values programs really use.
  * ``socket`` is allowed for every family but AF_VSOCK (host-guest channel).
  * Syscalls newer than the profile get ENOSYS from runc's generated stub, so libc
    fallbacks work instead of seeing EPERM.
  * Only the native ABI is allowed by default (x86_64, or aarch64): 32-bit compat
    syscalls (int 0x80, i386/x32/arm32 binaries) are refused. That removes the compat
    syscall layer, a steady source of kernel bugs, from reach, and each extra ABI costs
    runc ~4 ms per start to compile; our templates carry no 32-bit binaries.
    ``compat_32bit=True`` allows them.
The profile is the same for every sandbox; it is data, built fresh on each call so
callers may mutate their copy.
"""

from __future__ import annotations

import platform
from typing import Any

SCMP_ERRNO_EPERM = 1
SCMP_ERRNO_ENOSYS = 38

# Namespace bits of clone(2): NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
_CLONE_NAMESPACE_FLAGS = 0x7E020000
_AF_VSOCK = 40
_PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

_PROCESSES = """
    arch_prctl capget capset chdir execve execveat exit exit_group fchdir
    fork getcpu getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
    getpgid getpgrp getpid getppid getpriority getresgid getresgid32 getresuid getresuid32
    getrlimit get_robust_list getrusage getsid get_thread_area gettid getuid getuid32
    ioprio_get ioprio_set kcmp kill membarrier modify_ldt pidfd_getfd pidfd_open
    pidfd_send_signal prctl prlimit64 process_mrelease process_vm_readv process_vm_writev
    ptrace restart_syscall rseq sched_getaffinity sched_getattr sched_getparam
    sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp setfsgid setfsgid32 setfsuid setfsuid32 setgid
    setgid32 setgroups setgroups32 setpgid setpriority setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid
    set_thread_area set_tid_address setuid setuid32 tgkill tkill ugetrlimit umask uname
    vfork wait4 waitid waitpid sysinfo times chroot
"""

_SIGNALS_AND_TIME = """
    alarm clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
    clock_nanosleep_time64 getitimer gettimeofday nanosleep pause rt_sigaction
    rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo setitimer sigaltstack signal
    signalfd signalfd4 sigpending sigprocmask sigreturn sigsuspend time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
    timerfd_settime64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake
"""

_MEMORY = """
    brk madvise map_shadow_stack memfd_create memfd_secret mincore mlock mlock2 mlockall
    mmap mmap2 mprotect mremap msync munlock munlockall munmap pkey_alloc pkey_free
    pkey_mprotect remap_file_pages mseal
"""

_FILES = """
    access chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3
    faccessat faccessat2 fadvise64 fadvise64_64 fallocate fchmod fchmodat fchmodat2 fchown
    fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fremovexattr
    fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64
    futimesat getcwd getdents getdents64 getxattr inotify_add_watch inotify_init
    inotify_init1 inotify_rm_watch ioctl lchown lchown32 lgetxattr link linkat listxattr
    llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 mkdir mkdirat mknod
    mknodat name_to_handle_at newfstatat open openat openat2 pread64 preadv preadv2
    pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv removexattr rename
    renameat renameat2 rmdir sendfile sendfile64 splice stat stat64 statfs statfs64 statx
    symlink symlinkat sync sync_file_range sync_file_range2 syncfs tee truncate truncate64
    unlink unlinkat utime utimensat utimensat_time64 utimes vmsplice write writev
    fanotify_mark io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64
    io_setup io_submit cachestat landlock_add_rule landlock_create_ruleset
    landlock_restrict_self
"""

_POLLING_AND_IPC = """
    epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
    epoll_wait_old eventfd eventfd2 pipe pipe2 poll ppoll ppoll_time64 pselect6
    pselect6_time64 select _newselect ipc mq_getsetattr mq_notify mq_open mq_timedreceive
    mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink msgctl msgget msgrcv
    msgsnd semctl semget semop semtimedop semtimedop_time64 shmat shmctl shmdt shmget
    getrandom
"""

_SOCKETS = """
    accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom
    recvmmsg recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown
    socketcall socketpair
"""

_ARM = "arm_fadvise64_64 arm_sync_file_range breakpoint cacheflush set_tls"


def _names(*groups: str) -> list[str]:
    return sorted({name for group in groups for name in group.split()})


_ABIS = {
    "x86_64": (["SCMP_ARCH_X86_64"], ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    "aarch64": (["SCMP_ARCH_AARCH64"], ["SCMP_ARCH_ARM"]),
}


def architectures(machine: str | None = None, compat_32bit: bool = False) -> list[str]:
    """The seccomp ABIs to allow on ``machine`` (default: this one); empty means the
    native one as runc sees it."""
    native, compat = _ABIS.get(machine or platform.machine(), ([], []))
    return native + compat if compat_32bit else list(native)


def default_profile(compat_32bit: bool = False) -> dict[str, Any]:
    """The OCI seccomp object (``linux.seccomp``) every sandbox runs under."""
    allow = "SCMP_ACT_ALLOW"
    syscalls: list[dict[str, Any]] = [
        {
            "names": _names(_PROCESSES, _SIGNALS_AND_TIME, _MEMORY, _FILES, _POLLING_AND_IPC, _SOCKETS, _ARM),
            "action": allow,
        },
        {
            # clone(flags, ...): flags is argument 0 on every architecture we list.
            "names": ["clone"],
            "action": allow,
            "args": [
                {"index": 0, "value": _CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
            ],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": SCMP_ERRNO_ENOSYS},
        {
            "names": ["socket"],
            "action": allow,
            "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}],
        },
    ]
    syscalls.extend(
        {
            "names": ["personality"],
            "action": allow,
            "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
        }
        for value in _PERSONALITIES
    )
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": SCMP_ERRNO_EPERM,
        "architectures": architectures(compat_32bit=compat_32bit),
        "syscalls": syscalls,
    }
