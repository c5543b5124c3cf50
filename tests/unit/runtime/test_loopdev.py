"""The loop device of a mounted sandbox disk is found from its mount (no scan of every
device: corral/runtime/loopdev.py), and a teardown looking at it alone frees it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.runtime import loopdev, mounts
from corral.runtime.disk import DiskImages

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mounts)")


async def test_the_device_of_a_mounted_disk_is_found_and_freed_alone(tmp_path: Path) -> None:
    disks = DiskImages(tmp_path / "cache")
    image, target = tmp_path / "disk.img", tmp_path / "disk"
    target.mkdir()
    assert loopdev.mounted_device(target) is None  # nothing mounted there yet
    await disks.make(image, target, 16)
    try:
        device = loopdev.mounted_device(target)
        assert device is not None
        assert loopdev.backing_files([device]) == {device: str(image)}
        assert loopdev.backing_files()[device] == str(image)
    finally:
        mounts.umount(target)
    assert loopdev.wait_released(image, devices=[device])
    assert loopdev.detach_backing(image, [device]) == []
    assert str(image) not in loopdev.backing_files().values()
