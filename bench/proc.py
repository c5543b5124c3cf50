"""Running helper commands from the benchmark, with a deadline on each."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass


class CommandFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    def check(self) -> Completed:
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).decode(errors="replace").strip()[-400:]
            raise CommandFailed(f"{' '.join(self.argv)} exited {self.returncode}: {tail}")
        return self


async def run(argv: Sequence[str], *, timeout: float = 60.0, stdin: bytes | None = None) -> Completed:
    """Run ``argv`` to completion, capturing its output; kill it past ``timeout``.

    Not for commands that leave a child holding stdout open (``runc run -d``): use
    ``run_detached`` for those.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandFailed(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from None
    assert proc.returncode is not None
    return Completed(tuple(argv), proc.returncode, out, err)


async def run_detached(argv: Sequence[str], *, timeout: float = 60.0) -> int:
    """Run ``argv`` with every stdio stream on /dev/null (so a daemonised child keeps
    nothing of ours open) and return its exit code."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandFailed(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from None


def run_sync(argv: Sequence[str], *, timeout: float = 60.0, check: bool = False) -> Completed:
    """Blocking variant for set-up and clean-up outside the timed sections."""
    try:
        done = subprocess.run(
            list(argv), check=False, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from exc
    result = Completed(tuple(argv), done.returncode, done.stdout, done.stderr)
    return result.check() if check else result
