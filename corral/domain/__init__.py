"""Domain model: frozen dataclasses shared by services, ports and adapters.

Nothing here does I/O or knows about HTTP, and nothing here imports anything of corral
but the domain itself and ``corral.errors``. The sandbox's own records are in this
module; the rest of the domain, importable from here too:

- ``accounts``: ``Org``, ``ApiKey``, ``User``;
- ``events``: ``Event``, ``EventPage`` (the audit trail);
- ``killswitch``: ``Switch`` (and its ``GLOBAL`` scope);
- ``egress``: parsing and validation of egress policies (``from corral.domain.egress``);
- ``config_json``: the JSON form of a sandbox's configuration (stores, checkpoint.json).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from corral.domain.accounts import ApiKey as ApiKey
from corral.domain.accounts import Org as Org
from corral.domain.accounts import User as User
from corral.domain.events import Event as Event
from corral.domain.events import EventPage as EventPage
from corral.domain.killswitch import Switch as Switch


class SandboxStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    HIBERNATED = "hibernated"  # no processes, cgroups or network; its disk is kept
    PAUSED = "paused"  # its processes frozen (cgroup freezer), their memory kept; resumes on use


# Statuses whose processes exist and hold their memory (``Sandbox.live``).
LIVE_STATUSES = frozenset({SandboxStatus.STARTING, SandboxStatus.RUNNING, SandboxStatus.PAUSED})


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox. Validated by the service, enforced by runc
    (``cpu_seconds``, CPU time in all, None for none: by the runtime, which stops the
    sandbox once it has used that much, ``runtime/cpu_quota.py``)."""

    cpu_count: int = 1
    memory_mb: int = 512
    disk_mb: int = 2048
    pids: int = 512
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class Capacity:
    """MiB of disk and of memory a node may promise its sandboxes in all (0: no limit)."""

    disk_mb: int = 0
    memory_mb: int = 0


@dataclass(frozen=True)
class Holdings:
    """What the store's sandboxes hold, read at once for an admission: how many of one
    org's are live, and the MiB of disk promised to every org's live and hibernated
    sandboxes and of memory to the live ones."""

    org_live: int = 0
    disk_mb: int = 0
    memory_mb: int = 0


@dataclass(frozen=True)
class ImageConfig:
    """What a template built from a Dockerfile says about running it: ``ENV`` (merged
    under the sandbox's own envs), ``WORKDIR`` (the agent's and commands' working
    directory) and ``USER`` (commands run as that user; the agent stays root)."""

    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class Template:
    """A built, read-only root filesystem."""

    name: str
    digest: str
    rootfs: str  # absolute host path of the read-only root
    created_at: datetime
    size_bytes: int = 0
    config: ImageConfig = ImageConfig()


class EgressMode(enum.StrEnum):
    ALLOW_ALL = "allow_all"
    DENY_ALL = "deny_all"


@dataclass(frozen=True)
class EgressPolicy:
    """Where a sandbox may connect. Entries are CIDRs, hostnames or ``*.domain``
    wildcards; ``deny`` wins over ``allow``. The host, the control plane, other
    sandboxes and link-local addresses are denied whatever the policy says.
    ``audit_allowed``: the new connections the policy lets through are recorded in the
    audit trail too (``egress_allowed``, bounded per sandbox like ``egress_denied``)."""

    mode: EgressMode = EgressMode.ALLOW_ALL
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    audit_allowed: bool = False


@dataclass(frozen=True)
class SandboxSpec:
    """What the runtime needs to start a sandbox. ``disk_room_mb``: the size of the disk
    made for it when larger than ``limits.disk_mb``, up to which ``Runtime.set_limits``
    can change its disk in place; it may use ``limits.disk_mb`` of it."""

    id: str
    template: Template
    limits: Limits
    envs: dict[str, str] = field(default_factory=dict)
    egress: EgressPolicy = EgressPolicy()
    disk_room_mb: int | None = None


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
    template_digest: str | None = None  # the exact template build it runs on
    hold_until: datetime | None = None  # keepalive/extend: not idled out before this
    checkpoint_id: str | None = None  # the checkpoint it was forked from
    patches: tuple[PatchRun, ...] = ()  # the checkpoint's patches, as run in it
    deadline_at: datetime | None = None  # stopped and removed then, whatever its activity

    @property
    def live(self) -> bool:
        """Its processes exist and hold their memory: starting, running or paused (a
        paused sandbox's are frozen; whatever uses it resumes it first)."""
        return self.status in LIVE_STATUSES


@dataclass(frozen=True)
class Preview:
    """A preview URL: one port of a sandbox that the gateway serves to others than its
    owner. ``public`` previews need no credential; the others need the sandbox's preview
    token (or the owner's key). ``domain`` is the domain of its host name (None: the
    gateway's default domain)."""

    id: str
    sandbox_id: str
    org_id: str
    port: int
    public: bool
    domain: str | None
    created_at: datetime


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
    user: str | None = None  # run as this user, not the sandbox's default (its image's USER)
    stdin: bytes | None = None  # fed to the command, then its stdin is closed (None: no stdin)


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
    user: str | None = None  # run as this user, not the sandbox's default (its image's USER)
    hold_output: bool = False  # output waits (the process with it) for the first attach


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


@dataclass(frozen=True)
class FileChange:
    """A change in a watched directory tree: ``kind`` is created, modified or deleted;
    ``dropped``: changes lost before this one because the watcher lagged."""

    path: str
    kind: str
    dropped: int = 0


@dataclass(frozen=True)
class DiskUsage:
    """Bytes of a sandbox's root filesystem in all and in use."""

    total: int
    used: int


class CheckpointStatus(enum.StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class SandboxConfig:
    """What a checkpoint keeps of its sandbox besides the files: enough to start
    forks that behave like it."""

    template: str
    template_digest: str
    limits: Limits
    envs: dict[str, str]
    egress: EgressPolicy
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    """A named copy of a sandbox's filesystem changes and configuration (no process
    memory: running processes are not captured)."""

    id: str
    org_id: str
    sandbox_id: str
    name: str
    status: CheckpointStatus
    config: SandboxConfig
    created_at: datetime
    size_bytes: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Patch:
    """A bash script run, in ``sequence`` order, inside every sandbox forked from its
    checkpoint."""

    id: str
    checkpoint_id: str
    org_id: str
    sequence: int
    script: str
    description: str
    created_at: datetime
    strategy: str = "on_wake"


@dataclass(frozen=True)
class PatchRun:
    """How one patch went in one sandbox: ``status`` is applied, failed or skipped
    (not run because an earlier one failed)."""

    patch_id: str
    sequence: int
    status: str
    exit_code: int | None = None
    error: str | None = None


class BuildStatus(enum.StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class TemplateBuild:
    """A template built from a Dockerfile, as the store knows it: its latest build's
    status (the root itself is a ``Template`` once ready). It is its org's: ``name`` is
    unique within the org, and ``image`` is the template's name in the node's catalog
    (its id; the name itself for builds made before templates were scoped by org)."""

    id: str
    org_id: str
    name: str
    image: str
    tag: str
    status: BuildStatus
    dockerfile: str
    created_at: datetime
    digest: str | None = None
    error: str | None = None
