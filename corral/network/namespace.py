"""A sandbox's network namespace and its veth pair.

Names: the namespace is ``<prefix><sandbox id>`` (``/run/netns/corral-sb-...``; runc
joins it through the OCI config's network namespace ``path``); the host end of the
veth is ``vc`` + 12 hex digits of a hash of the id (interface names are at most 15
characters); the sandbox end is ``eth0``, created directly inside the namespace so
that concurrent attaches never clash on a name in the host. A namespace made ahead
(``spares.py``) has the pool's names instead, and its host end's alias (:func:`label`)
names the sandbox that claimed it.

Inside, the sandbox gets its address as a /32 with an on-link default route via the
bridge's address: every packet, even one to another sandbox's address, goes through
the host's routing and firewall (which drops sandbox-to-sandbox traffic), and the
bridge port is isolated, so there is no layer-2 path between sandboxes either.
``lo`` is up. IPv6 is switched off on ``eth0`` (``::1`` on ``lo`` stays) and ICMP echo
sockets are allowed to every group (``ping`` without CAP_NET_RAW; the namespace is
the sandbox's alone). The namespace is owned by the host's user namespace, so root in
the sandbox cannot reconfigure any of this.

Contract: :func:`create` starts no process: one thread of its own makes the named
namespace as ``ip netns add`` does (a file under /run/netns, a shared mount point, with
the thread's new namespace bind-mounted on it), then the veth pair and the bridge port
through a netlink socket it opened in the host before unsharing (rtnetlink.py), then
writes the sysctls and configures ``lo``, ``eth0``, the address and the default route
from inside; on a failure it undoes what it made. :func:`remove` (``ip link del`` and
``ip netns del``, without the process either) is idempotent and verifies that nothing
is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import socket
import threading
from pathlib import Path

from corral.dedicated import on_own_thread
from corral.errors import RuntimeFailure
from corral.network import command, rtnetlink

NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
CLONE_NEWNET = 0x40000000  # linux/sched.h
MS_BIND, MS_REC, MS_PRIVATE, MS_SHARED = 0x1000, 0x4000, 0x40000, 0x100000  # linux/mount.h
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def veth_name(sandbox_id: str) -> str:
    return "vc" + hashlib.sha256(sandbox_id.encode()).hexdigest()[:12]


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


async def create(
    netns: str,
    veth: str,
    bridge: str,
    address: str,
    gateway: ipaddress.IPv4Address,
) -> None:
    """Make the namespace and the veth pair, plug the host end into the bridge as an
    isolated port, and configure the inside. All or nothing: RuntimeFailure naming the
    failed step once what this call made is undone."""
    inside = ipaddress.IPv4Address(address)
    nice = command.nice()  # a refill yields to requests
    await on_own_thread(lambda: _make(netns, veth, bridge, inside, gateway, nice))


async def remove(netns: str, veth: str) -> None:
    """Delete the veth pair and the namespace (``ip link del`` and ``ip netns del``,
    without the process); idempotent. RuntimeFailure if either is still there
    afterwards, or for any error other than its being gone already."""
    nice = command.nice()
    await on_own_thread(lambda: _unmake(netns, veth, nice))


async def remove_link(name: str) -> None:
    """Delete one host interface (a leaked veth end); idempotent."""

    def work() -> None:
        problem = _delete_link(name)
        if problem:
            raise RuntimeFailure(problem)

    await on_own_thread(work)


def _unmake(netns: str, veth: str, nice: int) -> None:
    _lower_priority(nice)
    problem = _delete_link(veth)
    problems = [problem] if problem else []
    path = netns_path(netns)
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not mounted, no file: nothing to do
            problems.append(f"unmounting {path}: {os.strerror(code)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"removing {path}: {exc}")
    left = _leftovers(netns, veth)
    if left:
        raise RuntimeFailure(f"cannot remove {', '.join(left)}: {'; '.join(problems) or 'no error'}")
    if problems:
        raise RuntimeFailure(f"removing {netns}: {'; '.join(problems)}")


def _delete_link(name: str) -> str | None:
    """Delete the host link ``name`` (one already gone is no error); the error, if any."""
    try:
        with rtnetlink.open_route() as nl:
            rtnetlink.delete_link(nl, 1, name)
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            return f"deleting {name}: {exc}"
    return None


def _leftovers(netns: str, veth: str) -> list[str]:
    left = []
    if (NETNS_DIR / netns).exists():
        left.append(f"network namespace {netns}")
    if (SYS_NET / veth).exists():
        left.append(f"interface {veth}")
    return left


async def names(prefix: str) -> set[str]:
    """Names of the named network namespaces that start with ``prefix``."""

    def scan() -> set[str]:
        try:
            return {p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)}
        except FileNotFoundError:
            return set()

    return await asyncio.to_thread(scan)


async def address_of(netns: str) -> str | None:
    """The IPv4 address of ``eth0`` inside the namespace (recovery when the ledger
    and the firewall have both lost it), None if there is none."""
    done = await command.run(["ip", "-j", "-n", netns, "-4", "addr", "show", "dev", "eth0"], check=False)
    try:
        for link in json.loads(done.stdout) if done.ok else []:
            for entry in link.get("addr_info", []):
                if entry.get("family") == "inet" and isinstance(entry.get("local"), str):
                    return str(entry["local"])
    except (ValueError, AttributeError, TypeError):
        pass
    return None


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def label(veth: str, sandbox_id: str) -> None:
    """Write ``sandbox_id`` as the host end's interface alias (blocking, one sysfs
    write): what names the owner of a pooled namespace when the ledger is lost.
    RuntimeFailure if the interface is gone."""
    try:
        (SYS_NET / veth / "ifalias").write_text(sandbox_id)
    except OSError as exc:
        raise RuntimeFailure(f"cannot label {veth}: {exc}") from exc


def label_of(veth: str) -> str | None:
    """The alias :func:`label` wrote (blocking), None when there is none or no such
    interface."""
    try:
        text = (SYS_NET / veth / "ifalias").read_text().strip()
    except OSError:
        return None
    return text or None


def _make(
    netns: str,
    veth: str,
    bridge: str,
    address: ipaddress.IPv4Address,
    gateway: ipaddress.IPv4Address,
    nice: int,
) -> None:
    """:func:`create`'s work, on its own thread, which ends up inside the new namespace.

    What ``ip netns add`` and ``ip link add/set`` did, in the same order: the host's
    netlink socket is opened first (it stays the host's after the thread unshares),
    then the namespace is made and named, then the pair is made through the host socket
    with ``eth0`` created directly in the new namespace, then the host end becomes an
    isolated bridge port and goes up; last the inside is configured from the thread."""
    _lower_priority(nice)
    path = netns_path(netns)
    _netns_dir()
    try:
        host = rtnetlink.open_route()
    except OSError as exc:
        raise RuntimeFailure(f"opening a netlink socket: {exc}") from exc
    with host:
        try:
            master = socket.if_nametoindex(bridge)
        except OSError as exc:
            raise RuntimeFailure(f"finding bridge {bridge}: {exc}") from exc
        own = _unshare_named(path)
        made_veth = False
        step = f"creating veth {veth}"
        try:
            try:
                rtnetlink.add_veth(host, 1, veth, "eth0", own)
                made_veth = True
                step = f"making {veth} a port of {bridge}"
                rtnetlink.set_master(host, 2, veth, master)
                step = f"isolating bridge port {veth}"
                rtnetlink.isolate_port(host, 3, veth)
                step = f"bringing {veth} up"
                rtnetlink.set_up(host, 4, veth)
            finally:
                os.close(own)
            for key, value in _SYSCTLS.items():
                step = f"writing {key} inside"
                try:
                    with open(f"/proc/sys/{key}", "w") as handle:
                        handle.write(value)
                except FileNotFoundError:
                    if "ipv6" not in key:  # a kernel without IPv6 has nothing to switch off
                        raise
            step = "configuring the inside"
            _configure_inside(address, gateway)
        except BaseException as exc:
            # All or nothing: what this call made goes (never a veth of that name that
            # was there before), through the host socket and the host's mounts.
            if made_veth:
                with contextlib.suppress(OSError):
                    rtnetlink.delete_link(host, 5, veth)
            _unname(path)
            if isinstance(exc, OSError):
                raise RuntimeFailure(f"{netns}: {step}: {exc}") from exc
            raise


def _lower_priority(nice: int) -> None:
    """This thread (only) at ``nice``, when it is not 0 (``command.nice``)."""
    if nice:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _unname(path: str) -> None:
    """``ip netns del``'s work on ``path`` (unmount, unlink), errors ignored."""
    _libc.umount2(path.encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


_SYSCTLS = {"net/ipv6/conf/eth0/disable_ipv6": "1", "net/ipv4/ping_group_range": "0 2147483647"}


def _unshare_named(path: str) -> int:
    """``ip netns add``'s own part, on the calling thread: create the file ``path``,
    move the thread into a new network namespace and bind-mount that namespace onto the
    file. Returns an fd of the new namespace (the caller closes it). On failure nothing
    is left (the file is unmounted and removed) and RuntimeFailure names the step; the
    thread may then be in a namespace of its own that dies with it."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    except OSError as exc:
        raise RuntimeFailure(f"creating namespace file {path}: {exc}") from exc
    step = "unsharing the network namespace"
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        step = f"bind-mounting the namespace on {path}"
        _check(_libc.mount(_OWN_NETNS, path.encode(), b"none", MS_BIND, None), "mount")
        step = "opening the new namespace"
        return os.open(_OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        _unname(path)
        raise RuntimeFailure(f"{step}: {exc}") from exc


_OWN_NETNS = b"/proc/thread-self/ns/net"
_dir_lock = threading.Lock()
_dir_ready = False


def _netns_dir() -> None:
    """Make /run/netns a mount point with shared propagation, as ``ip netns add`` does
    (so that a namespace file unmounted in one mount namespace is unmounted in all):
    once per process, under ``ip``'s own flock on the directory (a concurrent ``ip``
    never stacks a second bind mount). RuntimeFailure if it cannot be made so."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        directory = str(NETNS_DIR).encode()
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(NETNS_DIR, 0o755)
            lock = os.open(NETNS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeFailure(f"making {NETNS_DIR}: {exc}") from exc
        try:
            with contextlib.suppress(OSError):  # as ip: go on without the lock
                fcntl.flock(lock, fcntl.LOCK_EX)
            made = False
            while _libc.mount(b"", directory, b"none", MS_SHARED | MS_REC, None) != 0:
                code = ctypes.get_errno()
                if code != errno.EINVAL or made:
                    raise RuntimeFailure(f"making {NETNS_DIR} shared: {os.strerror(code)}")
                # Not a mount point yet: bind it onto itself, in a peer group of its own.
                for flags, what in (
                    (MS_BIND | MS_REC, "bind-mounting"),
                    (MS_PRIVATE | MS_REC, "making private"),
                ):
                    if _libc.mount(directory, directory, b"none", flags, None) != 0:
                        code = ctypes.get_errno()
                        raise RuntimeFailure(f"{what} {NETNS_DIR}: {os.strerror(code)}")
                made = True
        finally:
            os.close(lock)  # also releases the flock
        _dir_ready = True


def _check(result: int, call: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}")


def _configure_inside(address: ipaddress.IPv4Address, gateway: ipaddress.IPv4Address) -> None:
    """What ``ip -n <netns> -batch`` did with ``link set lo up``, ``addr add
    <address>/32 dev eth0``, ``link set eth0 up`` and ``route add default via <gateway>
    dev eth0 onlink``, as four rtnetlink requests from the calling thread, which is in the
    namespace (a netlink socket belongs to the namespace of the thread that opens it).
    Blocking; OSError with the kernel's errno."""
    with rtnetlink.open_route() as nl:
        eth0 = socket.if_nametoindex("eth0")
        lo = socket.if_nametoindex("lo")
        rtnetlink.set_up(nl, 1, index=lo)
        rtnetlink.add_address32(nl, 2, eth0, address)
        rtnetlink.set_up(nl, 3, index=eth0)
        rtnetlink.add_default_onlink(nl, 4, eth0, gateway)
