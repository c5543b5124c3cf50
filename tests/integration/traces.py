"""What a sandbox leaves on the host: the checks behind "destroy leaves nothing"."""

from __future__ import annotations

from corral.runtime import cgroups, loopdev, mounts
from corral.settings import Settings


def traces(settings: Settings, sandbox_id: str) -> list[str]:
    """Every trace of ``sandbox_id`` on this host, described; empty when it is gone."""
    directory = settings.sandboxes_dir / sandbox_id
    found = []
    if directory.exists():
        found.append(f"dir {directory}")
    found += [f"mount {entry.path}" for entry in mounts.under(directory)]
    found += [
        f"loop {device} -> {backing}"
        for device, backing in loopdev.backing_files().items()
        if backing.startswith(str(directory) + "/")
    ]
    found += [f"cgroup {path}" for path in cgroups.dirs("corral", sandbox_id)]
    if (settings.runc_root / sandbox_id).exists():
        found.append(f"runc state {settings.runc_root / sandbox_id}")
    return found
