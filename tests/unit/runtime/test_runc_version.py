"""``RuncBinary.version``: what the health check asks, kept a short while, asked once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.errors import RuntimeFailure
from corral.runtime import runcbin
from corral.runtime.runcbin import RuncBinary


def fake_runc(tmp_path: Path, *, ok: bool = True) -> tuple[Path, Path]:
    calls = tmp_path / "calls"
    binary = tmp_path / "runc"
    answer = 'echo "runc version 9.9"' if ok else 'echo "broken" >&2; exit 3'
    binary.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{answer}\n')
    binary.chmod(0o755)
    return binary, calls


async def test_the_version_is_asked_once_for_callers_at_once_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary, calls = fake_runc(tmp_path)
    runc = RuncBinary(str(binary), tmp_path / "root")
    answers = await asyncio.gather(*(runc.version() for _ in range(20)))
    assert answers == ["runc version 9.9"] * 20
    assert await runc.version() == "runc version 9.9"
    assert calls.read_text().splitlines() == ["--version"]
    monkeypatch.setattr(runcbin, "VERSION_TTL_S", 0.0)  # kept no longer: asked again
    assert await runc.version() == "runc version 9.9"
    assert calls.read_text().splitlines() == ["--version", "--version"]


async def test_a_binary_that_fails_is_reported_and_its_failure_kept_too(tmp_path: Path) -> None:
    binary, calls = fake_runc(tmp_path, ok=False)
    runc = RuncBinary(str(binary), tmp_path / "root")
    for _ in range(3):
        with pytest.raises(RuntimeFailure, match="broken"):
            await runc.version()
    assert calls.read_text().splitlines() == ["--version"]
