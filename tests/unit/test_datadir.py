"""One corral server per data dir (``corral.datadir``): a second claim is refused with
the holder's pid, the claim goes with the process (also on kill -9), and ``Core.open``
claims before anything else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.core import Core
from corral.datadir import LOCK_FILE, claim
from corral.errors import Unavailable
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from tests.support.app import make_settings

HOLD = "import sys, time; from corral.datadir import claim; claim(__import__('pathlib').Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"


def test_a_second_claim_names_the_holder_and_the_claim_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Unavailable, match=f"pid {holder.pid}") as refused:
            claim(tmp_path)
        assert str(tmp_path) in str(refused.value) and "CORRAL_DATA_DIR" in str(refused.value)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        mine = claim(tmp_path)  # a crash leaves no stale claim
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        mine.release()
    finally:
        if holder.poll() is None:
            holder.kill()


async def test_core_open_claims_the_data_dir_until_close(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    async def open_core() -> Core:
        runtime = ProcessRuntime(tmp_path / "process-sandboxes")
        return await Core.open(settings, runtime=runtime, templates=StaticTemplates(), reconcile=False)

    first = await open_core()
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="another corral server"):
            await open_core()
        assert time.monotonic() - started < 1  # refused at once, before the store is touched
    finally:
        await first.close()
    second = await open_core()  # released at close
    await second.close()


async def test_the_data_dir_and_its_secrets_are_made_private_at_start(tmp_path: Path) -> None:
    """What an older corral (or a umask of 022) left readable is fixed by the next start;
    what a start creates is private from the first byte."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    for name in ("checkpoints", "disks", "builder", "templates", "sandboxes", "agent"):
        (data / name).mkdir()
        os.chmod(data / name, 0o755)
    (data / "admin-key").write_text("old")
    os.chmod(data / "admin-key", 0o644)
    outside = tmp_path / "elsewhere"
    outside.write_text("s" * 40)  # an operator's secret kept elsewhere, linked
    os.chmod(outside, 0o644)
    (data / "jwt-secret").symlink_to(outside)  # never followed
    core = await Core.open(
        make_settings(data),
        runtime=ProcessRuntime(tmp_path / "run"),
        templates=StaticTemplates(),
        reconcile=False,
    )
    try:
        assert core.bootstrap_key
        await core.sandboxes.list(await core.auth.authenticate_key(core.bootstrap_key))  # the store written
        modes = {p.name: oct(p.lstat().st_mode & 0o777) for p in data.iterdir() if not p.is_symlink()}
    finally:
        await core.close()
    assert oct(data.stat().st_mode & 0o777) == "0o710" and data.stat().st_gid == 100000
    assert (data / "sandboxes").stat().st_gid == 100000 and (data / "checkpoints").stat().st_gid == 0
    assert modes == {
        "corral.db": "0o600",
        "corral.db-wal": "0o600",
        "corral.db-shm": "0o600",
        "admin-key": "0o600",
        "serve.lock": "0o600",
        "checkpoints": "0o700",
        "disks": "0o700",
        "builder": "0o700",
        "templates": "0o700",
        "sandboxes": "0o710",
        "agent": "0o711",
    }
    assert oct(outside.stat().st_mode & 0o777) == "0o644"


async def test_a_store_outside_the_data_dir_is_private_too(tmp_path: Path) -> None:
    store = tmp_path / "db" / "corral.db"
    store.parent.mkdir()
    store.touch()
    os.chmod(store, 0o644)
    settings = make_settings(tmp_path / "data", database_url=f"sqlite+aiosqlite:///{store}")
    core = await Core.open(
        settings, runtime=ProcessRuntime(tmp_path / "run"), templates=StaticTemplates(), reconcile=False
    )
    await core.close()
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in store.parent.iterdir()} == {
        n: "0o600" for n in ("corral.db", "corral.db-wal", "corral.db-shm") if (store.parent / n).exists()
    }
    assert oct(store.stat().st_mode & 0o777) == "0o600"
