"""RuncBinary.status_from_file: runc's status from its state file, no runc process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from corral.runtime.runcbin import RuncBinary, _start_time


def _state(root: Path, sandbox_id: str, pid: int, started: int | None) -> Path:
    directory = root / sandbox_id
    directory.mkdir(parents=True)
    (directory / "state.json").write_text(
        json.dumps({"id": sandbox_id, "init_process_pid": pid, "init_process_start": started, "config": {}})
    )
    return directory


def test_a_live_init_started_when_recorded_is_running(tmp_path: Path) -> None:
    started = _start_time(os.getpid())
    assert started is not None
    _state(tmp_path, "sb-live", os.getpid(), started)
    assert RuncBinary("runc", tmp_path).status_from_file("sb-live") == "running"


def test_an_exec_fifo_means_created(tmp_path: Path) -> None:
    directory = _state(tmp_path, "sb-made", os.getpid(), _start_time(os.getpid()))
    (directory / "exec.fifo").touch()
    assert RuncBinary("runc", tmp_path).status_from_file("sb-made") == "created"


def test_a_reused_pid_or_a_dead_init_is_stopped(tmp_path: Path) -> None:
    started = _start_time(os.getpid())
    assert started is not None
    _state(tmp_path, "sb-reused", os.getpid(), started + 1)  # another process of that pid
    _state(tmp_path, "sb-dead", 0, started)
    runc = RuncBinary("runc", tmp_path)
    assert runc.status_from_file("sb-reused") == "stopped"
    assert runc.status_from_file("sb-dead") == "stopped"


def test_no_state_is_none_and_a_foreign_file_is_a_value_error(tmp_path: Path) -> None:
    runc = RuncBinary("runc", tmp_path)
    assert runc.status_from_file("sb-none") is None
    (tmp_path / "sb-bare").mkdir()
    assert runc.status_from_file("sb-bare") is None
    _state(tmp_path, "sb-odd", os.getpid(), None)
    with pytest.raises(ValueError):
        runc.status_from_file("sb-odd")
    (tmp_path / "sb-junk").mkdir()
    (tmp_path / "sb-junk" / "state.json").write_text("not json")
    with pytest.raises(ValueError):
        runc.status_from_file("sb-junk")
