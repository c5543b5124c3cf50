"""nftables transactions in this process, through libnftables (the library the ``nft``
tool is built on), instead of one ``nft -f -`` process each.

What it saves is the tool's start-up: ~1.5-2 ms of CPU and wall time per transaction
on a 2-core node, which is a good part of a sandbox's network attach. The kernel's side
(one atomic transaction, serialised with every other writer of the ruleset) is the same.

Contract: :func:`available` says whether the library could be loaded (``libnftables.so.1``,
Debian's ``libnftables1``, which the ``nft`` tool depends on); :func:`apply` runs one
script atomically in a worker thread (a transaction may wait for an RCU grace period in
the kernel, ~15 ms for deletions: never on the event loop) and raises RuntimeFailure
with the library's message when it fails. Each transaction uses a fresh context, so
transactions share no state.

Group commit: scripts that arrive while a transaction runs are applied together, in
arrival order, as the next transaction (at most ``MAX_BATCH``). Every transaction makes
the library read the table's chains and sets first (its cache; the firewall keeps their
number fixed, whatever the number of sandboxes: ``firewall.py``), a deletion waits for
the kernel's RCU grace period, and the kernel commits one transaction at a time anyway,
so a burst of creates or kills pays those once per batch instead of once per sandbox. A batch that fails changed nothing (a transaction is
all or nothing); its scripts are then applied one by one, so each caller gets its own
outcome.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import weakref
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from corral.errors import RuntimeFailure

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-nft")


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


MAX_BATCH = 32


async def apply(script: str) -> None:
    """Apply ``script`` (nft syntax) atomically, alone or in one transaction with others
    (see the module docstring). RuntimeFailure if it fails."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher(loop)
    await batcher.submit(script)


class _Batcher:
    """The scripts waiting for the next transaction of one event loop, and the task
    applying them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: list[tuple[str, asyncio.Future[None]]] = []
        self.draining: asyncio.Task[None] | None = None

    async def submit(self, script: str) -> None:
        done: asyncio.Future[None] = self.loop.create_future()
        self.waiting.append((script, done))
        if self.draining is None:
            self.draining = self.loop.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
                await self._commit(batch)
        finally:
            self.draining = None

    async def _commit(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        if len(batch) > 1 and await self._together(batch):
            return
        for script, done in batch:
            try:
                await self.loop.run_in_executor(_executor, _run, script)
            except Exception as exc:  # noqa: BLE001 - the caller's to raise
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(None)

    async def _together(self, batch: list[tuple[str, asyncio.Future[None]]]) -> bool:
        """Apply ``batch`` as one transaction; False (nothing applied) if it fails."""
        try:
            await self.loop.run_in_executor(_executor, _run, "\n".join(script for script, _ in batch))
        except Exception:  # noqa: BLE001 - one of them (at least) fails: each alone, then
            return False
        for _, done in batch:
            if not done.done():
                done.set_result(None)
        return True


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()


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
