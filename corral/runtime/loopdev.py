"""Loop devices through their ioctls (no ``losetup`` process).

A device is configured in one ``LOOP_CONFIGURE`` call (Linux 5.8+) with autoclear and
direct I/O: autoclear detaches it when its last user (the mount) goes away, so
unmounting the filesystem is the whole cleanup; direct I/O keeps the image's pages out
of the host page cache (no double caching). Blocking; run through ``asyncio.to_thread``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_CLR_FD = 0x4C01
LOOP_GET_STATUS64 = 0x4C05
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16

# struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 reserved[8]; }
# struct loop_info64 { u64 device, inode, rdevice, offset, sizelimit; u32 number,
#   encrypt_type, encrypt_key_size, flags; u8 file_name[64], crypt_name[64],
#   encrypt_key[32]; u64 init[2]; }
_LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q8Q")

_LOOP_INFO = struct.Struct("=5Q4I64s64s32s2Q")
_SYS_BLOCK = Path("/sys/block")


def attach(image: str | Path, *, block_size: int = 4096, attempts: int = 32) -> tuple[str, int]:
    """Bind a free loop device to ``image`` (read-write, autoclear, direct I/O).

    Returns the device path and an open fd of it. The caller must keep the fd open
    until something else (a mount) holds the device, then close it; closing it earlier
    detaches the device again. Raises OSError.
    """
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(attempts):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                config = _LOOP_CONFIG.pack(
                    backing,
                    block_size,
                    0,
                    0,
                    0,
                    0,
                    0,
                    number,
                    0,
                    0,
                    LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
                    str(image).encode()[:63],
                    b"",
                    b"",
                    0,
                    0,
                    *([0] * 8),
                )
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno == errno.EBUSY:  # another process took it first
                        continue
                    raise
                return device, fd
        finally:
            os.close(control)
    finally:
        os.close(backing)  # the device holds its own reference to the file
    raise OSError(errno.EBUSY, "no free loop device", str(image))


def detach(device: str) -> None:
    """Detach ``device`` now (LOOP_CLR_FD); a device that is not bound is a no-op. A
    device still in use is marked for autoclear by the kernel instead."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
    finally:
        os.close(fd)


def detach_backing(image: str | Path, devices: Sequence[str] | None = None) -> list[str]:
    """Detach every loop device still bound to ``image`` (matched by device and inode,
    not by name, so a device just reused for another file is left alone); among
    ``devices`` only when given (``mounted_device``: O(1), where a scan of every
    device is O(n) in the sandboxes). A missing image is a no-op. Returns the devices
    detached."""
    try:
        st = os.stat(image)
    except FileNotFoundError:
        return []
    detached = []
    for device, backing in backing_files(devices).items():
        if backing.removesuffix(" (deleted)") != str(image):
            continue
        try:
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO.size))
            lo_device, lo_inode = _LOOP_INFO.unpack(info)[:2]
            if (lo_device, lo_inode) == (st.st_dev, st.st_ino):
                fcntl.ioctl(fd, LOOP_CLR_FD)
                detached.append(device)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # unbound meanwhile
                raise
        finally:
            os.close(fd)
    return detached


def wait_released(image: str | Path, timeout: float = 2.0, devices: Sequence[str] | None = None) -> bool:
    """Wait until no loop device (among ``devices`` when given) is bound to ``image``
    (by path). An autoclear device whose filesystem was detached lazily is freed by the
    kernel a little later, after its last user lets go: a teardown that waits here
    leaves no device behind it. False if one is still bound after ``timeout`` seconds
    (the kernel frees it later)."""
    name = str(image)
    deadline = time.monotonic() + timeout
    while any(b.removesuffix(" (deleted)") == name for b in backing_files(devices).values()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def mounted_device(mount_point: str | Path) -> str | None:
    """The loop device whose filesystem is mounted at ``mount_point`` (found by the
    mount's device number, no scan), or None when nothing, or no loop device, is
    mounted there."""
    try:
        here = os.lstat(mount_point)
        parent = os.lstat(os.path.dirname(os.path.normpath(str(mount_point))))
    except OSError:
        return None
    if here.st_dev == parent.st_dev:
        return None  # not a mount point
    try:
        name = os.path.basename(
            os.readlink(f"/sys/dev/block/{os.major(here.st_dev)}:{os.minor(here.st_dev)}")
        )
    except OSError:
        return None
    return f"/dev/{name}" if name.startswith("loop") else None


def backing_files(devices: Sequence[str] | None = None) -> dict[str, str]:
    """Bound loop devices (every one, or those of ``devices``) and their backing file
    paths (as the kernel reports them; a deleted file ends in `` (deleted)``)."""
    found: dict[str, str] = {}
    try:
        names = os.listdir(_SYS_BLOCK) if devices is None else [os.path.basename(d) for d in devices]
    except FileNotFoundError:
        return found
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            path = (_SYS_BLOCK / name / "loop" / "backing_file").read_text().rstrip("\n")
        except OSError:
            continue  # not bound
        found[f"/dev/{name}"] = path
    return found
