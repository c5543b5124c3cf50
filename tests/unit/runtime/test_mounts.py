"""The mount table read for one prefix (corral/runtime/mounts.py): only the lines that
name it are parsed, escaped names included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.runtime import mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)")


def test_mounts_under_a_prefix_with_a_space_deepest_first(tmp_path: Path) -> None:
    spaced = tmp_path / "a b"
    outer, inner = spaced / "x", spaced / "x" / "y"
    outer.mkdir(parents=True)
    (tmp_path / "a bc").mkdir()  # a sibling whose name starts alike: never "under"
    mounts.mount("tmpfs", outer, "tmpfs")
    try:
        inner.mkdir()
        mounts.mount("tmpfs", inner, "tmpfs")
        mounts.mount("tmpfs", tmp_path / "a bc", "tmpfs")
        assert [e.path for e in mounts.under(spaced)] == [str(inner), str(outer)]
        assert [e.path for e in mounts.under(outer)] == [str(inner), str(outer)]
        assert all(e.fstype == "tmpfs" for e in mounts.under(spaced))
        mounts.unmount_all(spaced)
        assert mounts.under(spaced) == []
        assert [e.path for e in mounts.under(tmp_path / "a bc")] == [str(tmp_path / "a bc")]
    finally:
        mounts.unmount_all(tmp_path)
