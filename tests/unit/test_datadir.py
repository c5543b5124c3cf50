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

from corral.datadir import LOCK_FILE, claim
from corral.errors import Unavailable
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.services.core import Core
from tests.unit.api.conftest import make_settings

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
