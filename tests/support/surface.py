"""What the suites of the surfaces (tests/enclave, tests/xgen, tests/copass) share: a
real ``corral serve`` of their own, the local CLI against its store, re-signed tokens."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import jwt

from tests.support import process
from tests.support.process import CORRAL

ORGS = ("alpha", "beta")  # each suite's two orgs, an owner key each


def cli(env: Mapping[str, str], data_dir: Path, database_url: str, *args: str) -> str:
    """``corral ARGS`` on the server's data dir and store; its output (asserts success)."""
    proc = subprocess.run(
        [CORRAL, *args, "--data-dir", str(data_dir), "--database-url", database_url],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"corral {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def resigned(token: str, secret: str, expires_in: int = 600) -> str:
    """``token``'s claims signed again with ``secret``, expiring ``expires_in`` seconds
    from now (negative: already expired)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) + expires_in
    return jwt.encode(claims, secret, algorithm="HS256")


@contextmanager
def served(
    data_dir: Path, database_url: str, env: Mapping[str, str], log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``corral serve`` on ``data_dir`` and ``database_url``, healthy: (its process, its
    URL); stopped at the end."""
    proc, url = process.start(["--data-dir", str(data_dir), "--database-url", database_url], dict(env), log)
    try:
        process.wait_healthy(url, proc, log)
        yield proc, url
    finally:
        process.stop(proc)
