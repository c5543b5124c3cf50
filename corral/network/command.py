"""One call of a system networking tool (``ip``, ``nft``) as an asyncio subprocess.

Contract: :func:`run` returns a :class:`Completed` whatever the exit status when
``check`` is false, and raises RuntimeFailure (carrying the tool's own message) when
``check`` is true and the tool fails, cannot be started, or outlives its deadline (it
is killed then). Callers batch their work into one call (``ip -batch -``,
``nft -f -``) so that a sandbox's attach costs a handful of processes, not dozens.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import RuntimeFailure

DEFAULT_TIMEOUT = 10.0
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        message = self.stderr.strip() or self.stdout.strip() or f"exit status {self.returncode}"
        return f"{' '.join(self.argv[:3])}: {message[:2000]}"


async def run(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Completed:
    """Run ``argv`` with ``stdin`` (text) and return what it printed."""
    env = dict(_ENV, PATH=os.environ.get("PATH", _ENV["PATH"]))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise RuntimeFailure(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except BaseException as exc:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            raise RuntimeFailure(f"{argv[0]} did not finish within {timeout} s") from exc
        raise
    assert proc.returncode is not None
    done = Completed(tuple(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and not done.ok:
        raise RuntimeFailure(done.describe())
    return done
