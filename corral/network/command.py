"""One call of a system networking tool (``ip``, ``nft``), started with ``posix_spawn``
(``corral.spawn.capture``: a fraction of what an asyncio subprocess costs
under uvloop).

Contract: :func:`run` returns a :class:`Completed` whatever the exit status when
``check`` is false, and raises RuntimeFailure (carrying the tool's own message) when
``check`` is true and the tool fails, cannot be started, or outlives its deadline (it
is killed then). Callers batch their work into one call (``ip -batch -``,
``nft -f -``) so that a sandbox's attach costs a handful of processes, not dozens.

Work nobody waits for (refilling the pool of ready namespaces) runs inside
:func:`in_background`: the tools it starts get a lower CPU priority (nice
``BACKGROUND_NICE``) before they read their input, so they yield to request work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from corral import spawn
from corral.errors import RuntimeFailure

DEFAULT_TIMEOUT = 10.0
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
BACKGROUND_NICE = 10
_background: ContextVar[bool] = ContextVar("corral_network_background", default=False)


@contextlib.contextmanager
def in_background() -> Iterator[None]:
    """Within this block (and tasks started in it), tools run at a lower priority."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


def nice() -> int:
    """The niceness for work started now: ``BACKGROUND_NICE`` within
    :func:`in_background`, else 0 (the same as ours)."""
    return BACKGROUND_NICE if _background.get() else 0


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
        code, out, err = await spawn.capture(
            argv,
            stdin=stdin.encode() if stdin is not None else None,
            timeout=timeout,
            nice=nice(),
            env=env,
        )
    except OSError as exc:
        raise RuntimeFailure(f"cannot run {argv[0]}: {exc}") from exc
    except TimeoutError as exc:
        raise RuntimeFailure(f"{argv[0]} did not finish within {timeout} s") from exc
    done = Completed(tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and not done.ok:
        raise RuntimeFailure(done.describe())
    return done
