"""Domain model: frozen dataclasses shared by services, ports and adapters.

Nothing here does I/O or knows about HTTP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class SandboxStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox. Validated by the service, enforced by runc."""

    cpu_count: int = 1
    memory_mb: int = 512
    disk_mb: int = 2048
    pids: int = 512


@dataclass(frozen=True)
class Template:
    """A built, read-only root filesystem."""

    name: str
    digest: str
    rootfs: str  # absolute host path of the read-only root
    created_at: datetime
    size_bytes: int = 0


class EgressMode(enum.StrEnum):
    ALLOW_ALL = "allow_all"
    DENY_ALL = "deny_all"


@dataclass(frozen=True)
class EgressPolicy:
    """Where a sandbox may connect. Entries are CIDRs, hostnames or ``*.domain``
    wildcards; ``deny`` wins over ``allow``. The host, the control plane, other
    sandboxes and link-local addresses are denied whatever the policy says."""

    mode: EgressMode = EgressMode.ALLOW_ALL
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxSpec:
    """What the runtime needs to start a sandbox."""

    id: str
    template: Template
    limits: Limits
    envs: dict[str, str] = field(default_factory=dict)
    egress: EgressPolicy = EgressPolicy()


@dataclass(frozen=True)
class Sandbox:
    """A sandbox as the store knows it."""

    id: str
    org_id: str
    template: str
    status: SandboxStatus
    limits: Limits
    envs: dict[str, str]
    metadata: dict[str, str]
    timeout_s: int  # idle timeout, 0 = never
    created_at: datetime
    last_active_at: datetime
    ended_at: datetime | None = None
    error: str | None = None
    egress: EgressPolicy = EgressPolicy()
    preview_token_hash: str | None = None  # set when preview URLs need a token

    @property
    def live(self) -> bool:
        return self.status in (SandboxStatus.STARTING, SandboxStatus.RUNNING)


class RuntimeState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # exists on the node but its init is not running
    MISSING = "missing"


@dataclass(frozen=True)
class ExecRequest:
    cmd: str
    args: tuple[str, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class PtySize:
    cols: int = 80
    rows: int = 24


@dataclass(frozen=True)
class SessionSpec:
    """A long-running process inside the sandbox: an exec session, or a PTY if ``pty``."""

    cmd: str
    args: tuple[str, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float | None = None
    max_run_after_disconnect_s: float | None = None
    pty: PtySize | None = None


@dataclass(frozen=True)
class SessionInfo:
    id: str
    cmd: str
    args: tuple[str, ...]
    running: bool
    exit_code: int | None
    started_at: datetime
    attached_clients: int
    pty: bool = False


class Stream(enum.IntEnum):
    """Stream ids, equal to the OpenComputer WebSocket prefixes."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    EXIT = 3
    SCROLLBACK_END = 4


@dataclass(frozen=True)
class SessionEvent:
    """One event of an attached session. ``data`` holds output bytes for STDOUT and
    STDERR; ``exit_code`` is set for EXIT; SCROLLBACK_END carries nothing."""

    stream: Stream
    data: bytes = b""
    exit_code: int | None = None


@dataclass(frozen=True)
class FileEntry:
    name: str
    path: str
    is_dir: bool
    size: int
    mode: int = 0
    modified_at: float = 0.0
    is_symlink: bool = False
