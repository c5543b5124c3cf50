"""nftables transactions in this process, through libnftables (the library the ``nft``
tool is built on), instead of one ``nft -f -`` process each.

What it saves is the tool's start-up: ~1.5-2 ms of CPU and wall time per transaction
on a 2-core node, which is a good part of a sandbox's network attach. The kernel's side
(one atomic transaction, serialised with every other writer of the ruleset) is the same.

Contract: :func:`available` says whether the library could be loaded (``libnftables.so.1``,
Debian's ``libnftables1``, which the ``nft`` tool depends on); :func:`apply` runs one
script as one transaction in a worker thread of its own (a transaction may wait for an
RCU grace period in the kernel, ~15 ms for deletions: never on the event loop) and
raises RuntimeFailure with the library's message when it fails. Each call uses a fresh
context, so calls share no state.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from corral.errors import RuntimeFailure

_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="corral-nft")


@cache
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


def available() -> bool:
    return _library() is not None


async def apply(script: str) -> None:
    """Run ``script`` (nft syntax) as one transaction. RuntimeFailure if it fails."""
    await asyncio.get_running_loop().run_in_executor(_executor, _run, script)


def _run(script: str) -> None:
    lib = _library()
    if lib is None:
        raise RuntimeFailure("libnftables is not available")
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise RuntimeFailure("libnftables: cannot make a context")
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if lib.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
            error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
            raise RuntimeFailure(f"nft: {error[:2000] or 'the transaction failed'}")
    finally:
        lib.nft_ctx_free(ctx)
