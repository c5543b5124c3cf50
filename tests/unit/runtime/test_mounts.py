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


def test_mount_roots_are_told_by_statx_binds_and_stacks_included(tmp_path: Path) -> None:
    point, plain, bound = tmp_path / "point", tmp_path / "plain", tmp_path / "bound"
    for d in (point, plain, bound):
        d.mkdir()
    try:
        assert mounts.is_mount_root(point) is False
        assert mounts.is_mount_root(tmp_path / "missing") is False
        mounts.mount("tmpfs", point, "tmpfs")
        mounts.mount("tmpfs", point, "tmpfs")  # stacked
        mounts.mount(str(plain), bound, "", 0x1000)  # MS_BIND: the same filesystem
        assert mounts.is_mount_root(point) is True
        assert mounts.is_mount_root(bound) is True
        assert mounts.is_mount_root(plain) is False
        assert mounts.unmount_points([point, bound, plain]) is True
        assert mounts.under(tmp_path) == []
    finally:
        mounts.unmount_all(tmp_path)


def test_a_tree_with_a_mount_inside_is_not_removed(tmp_path: Path) -> None:
    from corral.runtime import bundle

    tree = tmp_path / "tree"
    inner = tree / "a" / "b"
    inner.mkdir(parents=True)
    (tree / "a" / "file").write_text("x")
    mounts.mount("tmpfs", inner, "tmpfs")
    try:
        (inner / "kept").write_text("not the tree's")
        with pytest.raises(OSError, match="still mounted"):
            bundle.remove_tree(tree)
        assert (inner / "kept").exists() and (tree / "a" / "file").exists()
        mounts.umount(inner)
        bundle.remove_tree(tree)
        assert not tree.exists()
        bundle.remove_tree(tree)  # a missing tree: a no-op
    finally:
        mounts.unmount_all(tmp_path)
