"""Where one sandbox's files live on the host, and which ids may name a path at all.

```
<data>/sandboxes/<id>/            0711 root (the mapped root must traverse it)
    config.json                   0600  the OCI config
    agent.sock                    0600  listening socket; its fd is the agent's fd 3
    init.pid                            pid of the container's init, written by runc
    runc.log                            runc's own log (JSON lines)
    disk.img                      0600  sparse ext4 image, the sandbox's disk
    disk/                         mount of disk.img (loop device, autoclear)
        upper/  work/                   the overlay's upper and work dirs
        logs/agent.log                  the agent's stdout/stderr (on the sandbox's
                                        own disk, so it cannot fill the host's)
    rootfs/                       mount of the overlay: template + disk/upper
    sys/                          with a network adapter only: a sysfs mounted for
                                  the sandbox's netns, bind-mounted at /sys inside
                                  (rootfs/ and sys/ are mounted while it starts; once
                                  it runs, it has its own copies and the host's go)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from corral.errors import InvalidInput

SANDBOX_ID = re.compile(r"sb-[a-z0-9]{8,32}")
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the NUL


def valid_id(sandbox_id: str) -> bool:
    return SANDBOX_ID.fullmatch(sandbox_id) is not None


@dataclass(frozen=True)
class SandboxPaths:
    dir: Path

    @classmethod
    def of(cls, sandboxes_dir: Path, sandbox_id: str) -> SandboxPaths:
        """Paths of ``sandbox_id``; InvalidInput for an id that is not ``sb-[a-z0-9]{8,32}``."""
        if not valid_id(sandbox_id):
            raise InvalidInput(f"invalid sandbox id {sandbox_id!r}", field="id")
        return cls(sandboxes_dir / sandbox_id)

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / "config.json"

    @property
    def socket(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def pid_file(self) -> Path:
        return self.dir / "init.pid"

    @property
    def runc_log(self) -> Path:
        return self.dir / "runc.log"

    @property
    def disk_image(self) -> Path:
        return self.dir / "disk.img"

    @property
    def disk(self) -> Path:
        return self.dir / "disk"

    @property
    def upper(self) -> Path:
        return self.disk / "upper"

    @property
    def work(self) -> Path:
        return self.disk / "work"

    @property
    def logs(self) -> Path:
        return self.disk / "logs"

    @property
    def agent_log(self) -> Path:
        return self.logs / "agent.log"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def sysfs(self) -> Path:
        return self.dir / "sys"
