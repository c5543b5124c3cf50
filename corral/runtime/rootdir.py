"""RootDir: files inside a tree a tenant controls, reached without following a symlink
or leaving the tree.

corral's host side runs as root and works in trees whose contents it does not choose:
a template root (a Dockerfile's image is its author's, down to ``/etc`` being a link to
a host directory) and a sandbox's upper layer (written by the sandbox's own code). No
name inside them may lead anywhere else, and no file there may hold a thread: so every
path given to a ``RootDir`` is relative to its open directory and walked one component
at a time from a directory fd with ``O_NOFOLLOW | O_DIRECTORY``.

Contracts:
- A symlink, a ``..`` or anything not a directory where a directory is expected stops
  the walk with ``NotConfined`` (an ``OSError``: ELOOP for a link, ENOTDIR otherwise,
  EINVAL for ``..``), whose message names the path inside the root. A missing
  component is ``FileNotFoundError``. The final component is never followed either
  (``lstat``, ``readlink``); only ``resolve`` follows links, and only inside the root,
  the way the sandbox itself sees them (an absolute target starts again at the root,
  ``..`` stops at it).
- A file is read only if it is a regular file: it is opened ``O_PATH | O_NOFOLLOW``
  first and checked with ``fstat``, then reopened for reading through that fd, so a
  FIFO, socket or device is never opened (nothing here blocks on one).
- A write never opens an existing name: a new file with a random name is created with
  ``O_EXCL | O_NOFOLLOW``, filled, given its owner and mode, and renamed over the name,
  atomically; whatever was there (a FIFO, a link, a whiteout) is replaced, never
  followed or opened. A directory at that name is refused (``IsADirectoryError``).
- Blocking; call through ``treework.TreeWork`` (or a thread) from async code.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType
from typing import Self

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # what the kernel allows in one lookup


class NotConfined(OSError):
    """A path inside a root that leads out of it, or through a symlink, or through a
    non-directory."""


def parts(relative: str) -> list[str]:
    """The components of ``relative`` (a leading ``/`` means the root; ``.`` and empty
    components are dropped). NotConfined for ``..``."""
    found = [part for part in relative.split("/") if part not in ("", ".")]
    if ".." in found:
        raise NotConfined(errno.EINVAL, "'..' is not allowed in a path inside a root", relative)
    return found


class RootDir:
    """An open directory of an untrusted tree (see the module docstring). Owns its fd:
    use it as a context manager, or ``close`` it."""

    def __init__(self, fd: int, where: str) -> None:
        self._fd = fd
        self.where = where

    @classmethod
    def open(cls, path: Path | str) -> RootDir:
        """Open ``path`` (a trusted host path whose last component must be a real
        directory, not a link to one). NotConfined, FileNotFoundError."""
        try:
            return cls(os.open(path, _DIR_FLAGS), str(path))
        except OSError as exc:
            raise _why(exc, None, str(path), str(path)) from exc

    @property
    def fd(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- directories ----------------------------------------------------------------

    def subdir(self, relative: str, *, create: tuple[int, int, int] | None = None) -> RootDir:
        """The directory at ``relative``, opened. With ``create`` = (mode, uid, gid),
        missing components are made with that mode and owner (an existing one is
        used as it is). NotConfined, FileNotFoundError."""
        fd = os.dup(self._fd)
        walked = self.where
        try:
            for part in parts(relative):
                walked = f"{walked}/{part}"
                try:
                    try:
                        child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    except FileNotFoundError:
                        if create is None:
                            raise
                        child = self._make(fd, part, create)
                except OSError as exc:
                    raise _why(exc, fd, part, walked) from exc
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return RootDir(fd, walked)

    @staticmethod
    def _make(parent: int, name: str, create: tuple[int, int, int]) -> int:
        mode, uid, gid = create
        try:
            os.mkdir(name, mode, dir_fd=parent)
        except FileExistsError:  # made meanwhile: open it like any other (never following it)
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        return fd

    def _parent(self, relative: str) -> tuple[RootDir, str]:
        found = parts(relative)
        if not found:
            raise NotConfined(errno.EINVAL, "a file name is needed", relative)
        return self.subdir("/".join(found[:-1])), found[-1]

    # -- reading --------------------------------------------------------------------

    def lstat(self, relative: str) -> os.stat_result:
        """The entry at ``relative`` itself (a link is not followed). ``"."`` is the root."""
        if not parts(relative):
            return os.fstat(self._fd)
        parent, name = self._parent(relative)
        with parent:
            return os.stat(name, dir_fd=parent.fd, follow_symlinks=False)

    def readlink(self, relative: str) -> str:
        """The target of the symlink at ``relative``. OSError(EINVAL) if it is not one."""
        parent, name = self._parent(relative)
        with parent:
            return os.readlink(name, dir_fd=parent.fd)

    def read(self, relative: str, limit: int = 1 << 20) -> bytes:
        """At most ``limit`` bytes of the regular file at ``relative``. NotConfined for
        anything else (a FIFO, socket, device or link is not opened)."""
        parent, name = self._parent(relative)
        with parent:
            path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
        try:
            kind = os.fstat(path_fd).st_mode
            if not stat.S_ISREG(kind):
                raise NotConfined(
                    errno.EINVAL, f"not a regular file ({_kind(kind)})", f"{self.where}/{relative}"
                )
            fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            os.close(path_fd)
        try:
            chunks, left = [], limit
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def resolve(self, relative: str) -> os.stat_result:
        """What ``relative`` is as seen from inside the root: symlinks are followed, but
        an absolute target starts again at the root and ``..`` stops at it, so the walk
        never leaves the tree. FileNotFoundError when it leads nowhere; OSError(ELOOP)
        after 40 links."""
        todo = [p for p in relative.split("/") if p not in ("", ".")]
        todo.reverse()
        stack = [os.dup(self._fd)]
        links = 0
        try:
            while todo:
                part = todo.pop()
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise OSError(errno.ELOOP, "too many levels of symbolic links", relative)
                    target = os.readlink(part, dir_fd=stack[-1])
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    todo.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                    continue
                if not todo:
                    return st
                try:
                    stack.append(os.open(part, _DIR_FLAGS, dir_fd=stack[-1]))
                except OSError as exc:
                    raise _why(exc, stack[-1], part, relative) from exc
            return os.fstat(stack[-1])
        finally:
            for fd in stack:
                os.close(fd)

    # -- writing --------------------------------------------------------------------

    def write(self, relative: str, data: bytes, *, mode: int, uid: int, gid: int) -> None:
        """Replace the file at ``relative`` with ``data`` (owner ``uid:gid``, ``mode``),
        atomically, whatever non-directory was there. IsADirectoryError for a
        directory; NotConfined for a path through a link."""
        parent, name = self._parent(relative)
        with parent:
            try:
                if stat.S_ISDIR(os.stat(name, dir_fd=parent.fd, follow_symlinks=False).st_mode):
                    raise IsADirectoryError(
                        errno.EISDIR, "a directory, not replaced", f"{parent.where}/{name}"
                    )
            except FileNotFoundError:
                pass
            temp = f".{name}.corral-{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o600, dir_fd=parent.fd)
            try:
                try:
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, mode)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
                os.rename(temp, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            except BaseException:
                try:
                    os.unlink(temp, dir_fd=parent.fd)
                except FileNotFoundError:
                    pass
                raise


def _why(exc: OSError, parent: int | None, name: str, where: str) -> OSError:
    """A walk's failure, said plainly: NotConfined naming what stood where a directory
    was expected (``O_DIRECTORY | O_NOFOLLOW`` says ENOTDIR or ELOOP for a link)."""
    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
        return exc
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return NotConfined(errno.ELOOP, "a symbolic link (not followed)", where)
    return NotConfined(errno.ENOTDIR, f"{_kind(mode)}, not a directory", where)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "nothing"
