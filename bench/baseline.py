"""An earlier revision of corral, run beside this tree's in the same benchmark run.

``Worktree(rev)`` checks ``rev`` out as a detached ``git worktree`` in a new dir under
``/var/tmp`` (``add``, which answers the ``Code`` that runs it: named ``corral@<short
sha>``, with this repository's virtualenv python and ``PYTHONPATH`` at the worktree) and
checks that the python so started imports the worktree's ``corral`` package, not this
tree's. ``remove`` deletes the worktree and git's record of it; it is safe to call
twice, and after an ``add`` that failed half-way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from corral_target import Code
from proc import CommandFailed, run_sync

REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    done = run_sync(["git", "-C", str(REPO), *args], timeout=120, check=True)
    return done.stdout.decode().strip()


class Worktree:
    def __init__(self, rev: str, parent: Path = Path("/var/tmp")) -> None:
        self.rev = rev
        self.parent = parent
        self.path: Path | None = None

    def add(self) -> Code:
        sha = git("rev-parse", "--verify", f"{self.rev}^{{commit}}")
        short = sha[:7]
        self.path = Path(tempfile.mkdtemp(prefix=f"corral-bench-{short}-", dir=self.parent))
        git("worktree", "add", "--detach", str(self.path), sha)
        code = Code(f"corral@{short}", self.path)
        imported = subprocess.run(
            [sys.executable, "-c", "import corral; print(corral.__file__)"],
            env={**os.environ, **code.env()},
            cwd=self.path,
            capture_output=True,
            timeout=60,
            check=False,
        )
        where = Path(imported.stdout.decode().strip() or "?").resolve()
        if imported.returncode != 0 or not where.is_relative_to(self.path.resolve()):
            raise CommandFailed(
                f"{code.name}: python imports corral from {where}, not from {self.path}: "
                f"{imported.stderr.decode()[-400:]}"
            )
        print(f"{code.name}: {self.rev} checked out at {self.path} (corral from {where.parent})", flush=True)
        return code

    def remove(self) -> None:
        if self.path is None:
            return
        run_sync(["git", "-C", str(REPO), "worktree", "remove", "--force", str(self.path)], timeout=120)
        shutil.rmtree(self.path, ignore_errors=True)
        run_sync(["git", "-C", str(REPO), "worktree", "prune"], timeout=120)
        self.path = None
