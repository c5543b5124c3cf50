"""The server's C heap (glibc malloc): large buffers given back to the system.

CPython takes every object over 512 bytes from ``malloc``. glibc serves requests above
its mmap threshold with their own mappings (unmapped when freed), but raises the
threshold to the size of any mapped block freed, up to 32 MiB: after one large
command output, the next ones come from the heap, and a heap only shrinks from its
top, so a burst of output could stay resident long after its answers were sent.

``tune()`` fixes the threshold (which also turns its raising off), so buffers of
command output (``bytearray``/``bytes`` of megabytes) are always mappings of their
own; ``trim()`` hands the free pages inside the heap back (``malloc_trim``; the
output of many small frames and the answers' encoding live there), at most once per
``TRIM_EVERY_S``. Both are no-ops where glibc is not the C library.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time

log = logging.getLogger("corral")

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 256 << 10
TRIM_EVERY_S = 1.0

_last_trim = 0.0
_pending: asyncio.TimerHandle | None = None


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune() -> None:
    """Allocations of ``MMAP_THRESHOLD`` bytes or more get mappings of their own."""
    if _LIBC is not None and _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) failed: large buffers may stay in the heap")


def trim() -> None:
    """Give the heap's free pages back to the system: now, or (within ``TRIM_EVERY_S``
    of the last trim, in an event loop) once that time is up."""
    global _pending
    if _LIBC is None:
        return
    wait = _last_trim + TRIM_EVERY_S - time.monotonic()
    if wait > 0:
        if _pending is None:
            try:
                _pending = asyncio.get_running_loop().call_later(wait, _trim_now)
            except RuntimeError:  # no loop: the next trim will do
                pass
        return
    _trim_now()


def _trim_now() -> None:
    global _pending
    _pending = None
    _last_trim = time.monotonic()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
