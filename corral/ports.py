"""Narrow ports between the services and the adapters.

Each port is a small ``Protocol``. Real adapters live in ``runtime/``, ``network/``,
``agent/`` and ``store/`` (the stores: ``SandboxStore``, ``PreviewStore``,
``CheckpointStore``, ``TemplateBuildStore``, ``KeyStore``, ``UserStore``, ``EventStore``,
``SwitchStore``, ``BindingStore``); only the composition root constructs them. Fakes
live beside them, so most tests need no root: ``runtime/memory.py`` (``FakeRuntime``,
``FakeAgent``, ``FakeSnapshots``: sandboxes in memory, no process), ``runtime/process.py``
(the real agent as a plain local process), ``store`` on SQLite in a temp dir.

Error contract for every port: adapters raise only ``corral.errors`` types; OS, runc,
SQL and protocol errors are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from corral.domain import (
    ApiKey,
    Checkpoint,
    DiskUsage,
    EgressPolicy,
    Event,
    EventPage,
    ExecRequest,
    ExecResult,
    FileChange,
    FileEntry,
    Holdings,
    Limits,
    Org,
    Patch,
    Preview,
    RuntimeState,
    Sandbox,
    SandboxSpec,
    SandboxStatus,
    SessionEvent,
    SessionInfo,
    SessionSpec,
    Stream,
    Switch,
    Template,
    TemplateBuild,
    User,
)
from corral.domain.bindings import Binding
from corral.domain.usage import Usage


class Attachment(Protocol):
    """A live attachment to one session inside a sandbox.

    Iterating yields the scrollback as STDOUT/STDERR events, then exactly one
    SCROLLBACK_END, then live output, then one EXIT event if the process ends while
    attached; iteration stops after EXIT or when the agent closes the stream.
    """

    def __aiter__(self) -> AsyncIterator[SessionEvent]: ...

    async def send_stdin(self, data: bytes) -> None:
        """Write bytes to the process's stdin (its PTY for PTY sessions)."""

    async def close_stdin(self) -> None:
        """Close the process's stdin (EOF). No-op for PTY sessions."""

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the PTY; InvalidInput for a session without one."""


class FileChunks(Protocol):
    """A file being read: its chunks, and ``length``: what they add up to, or None when
    the file cannot say (procfs, sysfs, all holes). A read that cannot give ``length``
    bytes fails (AgentError) rather than ending short."""

    length: int | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class FilePage:
    """Entries of a directory in name order; ``next`` is the ``after`` of the rest
    (None: nothing follows)."""

    entries: builtins.list[FileEntry]
    next: str | None


class OutputKeeper(Protocol):
    """How much of one command's output its caller may keep in memory (the server's
    budget of buffered output, ``corral.services.output``)."""

    @property
    def limit(self) -> int:
        """Bytes kept at most of each stream (the agent drops the rest at the source)."""

    def grant(self, stream: Stream, size: int) -> int:
        """How many of ``size`` more bytes of ``stream`` (STDOUT or STDERR) may be kept,
        0 to ``size``; what is granted is held until the caller releases the output."""


class Processes(Protocol):
    """The processes of one sandbox, as its agent (PID 1) runs them: commands run to
    completion, sessions kept with scrollback (PTYs among them), the ports they listen
    on. containerd's task service, for one sandbox.

    The agent is untrusted: implementations bound every size and wait, validate every
    answer, and raise AgentError for anything malformed.
    """

    async def ping(self) -> None:
        """Return when the agent answers; AgentError if it does not in time."""

    async def set_envs(self, envs: dict[str, str]) -> None:
        """Add the sandbox's envs to what every later command gets (for a sandbox
        started before its create knew them)."""

    async def exec(self, request: ExecRequest, keep: OutputKeeper | None = None) -> ExecResult:
        """Run to completion. On timeout the process group is killed and the result has
        ``timed_out=True`` and exit code 124. Output beyond what ``keep`` grants (without
        it, the client's own limit per stream) is dropped and the result says
        ``truncated``."""

    async def start_session(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        """Start a process kept by the agent with scrollback. Conflict if the id exists."""

    async def list_sessions(self) -> list[SessionInfo]: ...

    async def session(self, session_id: str) -> SessionInfo:
        """NotFound for an unknown id."""

    def attach(self, session_id: str) -> AbstractAsyncContextManager[Attachment]:
        """Attach to a session (several attachments at once are allowed)."""

    async def kill_session(self, session_id: str, signal: int = 9) -> None:
        """Signal the session's process group. NotFound for an unknown id."""

    async def resize_session(self, session_id: str, cols: int, rows: int) -> None:
        """Resize a PTY session. NotFound for an unknown id; InvalidInput without a PTY."""

    async def ports(self) -> list[int]:
        """TCP ports listening inside the sandbox."""

    async def disk(self) -> DiskUsage:
        """Bytes of the sandbox's root filesystem in all and in use."""

    async def shutdown(self) -> None:
        """Ask the agent to end every process and exit."""


class Files(Protocol):
    """The files of one sandbox, as its agent sees them. Paths are absolute paths inside
    the sandbox; the agent resolves them in the sandbox's own mount namespace. File
    errors map to NotFound (no such path), InvalidInput (wrong kind of path, relative
    path) and Conflict (exists / not empty where that matters); anything malformed in
    an answer is AgentError, as for ``Processes``.

    ``within`` (an absolute directory): the path, its symlinks resolved by the agent in
    the sandbox, must lead inside that directory, else Forbidden.
    """

    async def read_file(
        self, path: str, *, within: str | None = None
    ) -> AbstractAsyncContextManager[FileChunks]:
        """Open a regular file for streaming; errors (NotFound, is a directory, not a
        regular file) are raised here, before the first chunk."""

    async def write_file(
        self,
        path: str,
        chunks: AsyncIterable[bytes],
        mode: int = 0o644,
        *,
        within: str | None = None,
        owner: int | None = None,
    ) -> int:
        """Stream a file in, creating parent directories; returns bytes written. The
        file appears atomically (temp file + rename). ``owner``: the uid (and gid) of
        the file and of the directories made for it (None: root's)."""

    async def list_dir(
        self, path: str, after: str | None = None, limit: int | None = None, *, within: str | None = None
    ) -> FilePage:
        """Entries of a directory after the name ``after``, at most ``limit`` (and no
        more than one answer of the agent holds: follow ``next``)."""

    async def stat(self, path: str, *, within: str | None = None) -> FileEntry | None:
        """None when nothing is at ``path`` (symlinks are not followed)."""

    async def mkdir(self, path: str) -> None:
        """mkdir -p; idempotent."""

    async def remove(self, path: str, *, within: str | None = None) -> None:
        """rm -rf of one path; NotFound when nothing is there."""

    def watch(
        self, path: str, *, within: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[FileChange]]:
        """Changes in the directory tree at ``path`` (inotify in the sandbox), as they
        come, while the block runs; NotFound / InvalidInput (not a directory) on entry.
        A consumer that lags loses changes (counted in the next one's ``dropped``), it
        never makes anything buffer without bound."""


class Agent(Processes, Files, Protocol):
    """Client of the corral agent inside one sandbox: its processes and its files. A
    service takes the one of the two it uses."""


class Runtime(Protocol):
    """Runs sandboxes on this node.

    ``create`` is all-or-nothing: on any failure it has undone its own steps before it
    raises RuntimeFailure. ``destroy`` is idempotent. Sandboxes keep running when the
    corral process exits.
    """

    name: str

    async def create(self, spec: SandboxSpec) -> None:
        """Start the sandbox and return once its agent answers."""

    async def destroy(self, sandbox_id: str) -> None: ...

    async def discard(self, sandbox_id: str) -> None:
        """Kill the sandbox's processes and return once they are dead; the rest of
        ``destroy`` may go on in the background (a crash before it ends leaves traces
        that ``reclaim`` removes). Idempotent."""

    async def settle(self, timeout: float = 30.0) -> bool:
        """Wait up to ``timeout`` seconds for the background teardowns ``discard``
        started (their roots unmounted, their templates free); False if some go on."""

    async def state(self, sandbox_id: str) -> RuntimeState: ...

    async def list_ids(self) -> set[str]:
        """Ids of every sandbox this node has any trace of (runc state, bundle dir)."""

    async def reclaim(self, keep: set[str]) -> list[str]:
        """Remove containers, mounts, bundles and cgroups of every sandbox not in
        ``keep``; return the ids removed."""

    async def hibernate(self, sandbox_id: str) -> int:
        """Stop the sandbox's processes, free its memory, cgroups, mounts and network,
        keep its disk; return the disk's size in bytes. NotFound when the sandbox has no
        disk here. Idempotent."""

    async def resume(self, spec: SandboxSpec, *, forked: bool = False) -> None:
        """Start a sandbox again on the disk it has here (kept by ``hibernate``, or laid
        by a Snapshotter's ``restore`` or ``fork``) and return once its agent answers;
        ``forked``: the disk is a copy of another sandbox's, whose hostname files become
        ``spec.id``'s. NotFound without a disk; on failure the sandbox is left
        hibernated, its disk kept (RuntimeFailure)."""

    async def freeze(self, sandbox_id: str) -> None:
        """Freeze every process of the running sandbox where it is (the cgroup freezer):
        they keep their memory and use no CPU until ``thaw``; its agent does not answer
        meanwhile. Returns once all are frozen. Idempotent; NotFound when it does not
        run here; RuntimeFailure when they did not freeze (then they run)."""

    async def thaw(self, sandbox_id: str) -> None:
        """Let the processes ``freeze`` froze run again. Idempotent (a sandbox not
        frozen, or not here, is a no-op); RuntimeFailure."""

    def agent(self, sandbox_id: str) -> Agent:
        """A client for the sandbox's agent (cheap; no I/O until used)."""

    async def address(self, sandbox_id: str) -> str:
        """The IP address at which this host reaches servers inside the sandbox
        (its veth address; 127.0.0.1 for the process runtime). NotFound if none."""

    async def set_egress(self, sandbox_id: str, policy: EgressPolicy) -> None:
        """Apply a new egress policy to a running sandbox at once."""

    async def set_limits(self, sandbox_id: str, limits: Limits) -> None:
        """Change a running sandbox's limits in place, at once: CPUs, memory, pids, the
        CPU-time quota, and its disk up to the size it was made with
        (``SandboxSpec.disk_room_mb``; Conflict beyond). NotFound if it is not here."""

    async def usage(self, sandbox_id: str) -> Usage:
        """What the sandbox used and which limits it hit, as the host's kernel counted
        it (never as the sandbox reports it); it still answers after its processes died,
        until it is destroyed. NotFound when it has no trace here."""

    async def health(self) -> dict[str, object]:
        """What this runtime is and whether it answers."""


@dataclass(frozen=True)
class NetInfo:
    """A sandbox's network as the runtime needs it."""

    netns_path: str  # the named network namespace runc joins
    address: str  # the sandbox's IP on the bridge
    gateway: str  # the bridge's IP: default route and DNS server of the sandbox


DeniedFn = Callable[[str, dict[str, object]], Awaitable[None]]
"""Called with a sandbox id and the details of one denied connection attempt."""

AllowedFn = Callable[[str, dict[str, object]], Awaitable[None]]
"""Called with a sandbox id and the details of one new connection its egress policy let
through (for a policy with ``audit_allowed`` only)."""


class Network(Protocol):
    """Per-sandbox networks on this node: a named netns, a veth to the bridge, an
    address from the pool, NAT for allowed egress, nftables rules per sandbox. The host,
    the control plane, other sandboxes and link-local addresses are always denied.
    ``attach`` is all-or-nothing; ``detach`` is idempotent."""

    async def attach(self, sandbox_id: str, policy: EgressPolicy) -> NetInfo: ...

    async def detach(self, sandbox_id: str) -> None: ...

    async def set_policy(self, sandbox_id: str, policy: EgressPolicy) -> None: ...

    async def info(self, sandbox_id: str) -> NetInfo | None: ...

    async def reclaim(self, keep: set[str]) -> list[str]:
        """Remove netns, veths, addresses and rules of every sandbox not in ``keep``."""


ProgressFn = Callable[[str, float], None]
"""Called with a message and a fraction in [0, 1] while a long job runs."""


class Templates(Protocol):
    """Content-addressed, read-only template roots. Concurrent first uses of one name
    build it once."""

    def known(self) -> list[str]:
        """Names that can be built."""

    async def get(self, name: str) -> Template:
        """The built template, building it first if needed. NotFound for a name that is
        neither built nor buildable."""

    async def build(self, name: str, progress: ProgressFn | None = None, force: bool = False) -> Template: ...

    async def list(self) -> list[Template]:
        """Built templates."""

    async def find(self, name: str, digest: str) -> Template | None:
        """That exact build of ``name`` if it is still on this node (hibernated sandboxes
        and checkpoints start again on the build they were made on)."""


class SandboxStore(Protocol):
    """Persistence of sandboxes. Every call is scoped by org; another org's sandbox is
    NotFound."""

    async def add(self, sandbox: Sandbox) -> None: ...

    async def get(self, org_id: str, sandbox_id: str) -> Sandbox:
        """NotFound if absent or another org's."""

    async def find(self, sandbox_id: str) -> Sandbox | None:
        """Unscoped lookup, for the node itself (reconcile, idle reaper)."""

    async def list(
        self,
        org_id: str,
        *,
        live_only: bool = False,
        statuses: Collection[SandboxStatus] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Sandbox]:
        """The org's sandboxes in creation order (``statuses``: only those); with
        ``limit``, at most that many, after sandbox ``after`` (InvalidInput naming
        ``cursor`` when it is not the org's)."""
        ...

    async def list_all(self, *, live_only: bool = False) -> builtins.list[Sandbox]: ...

    async def holdings(self, org_id: str | None = None) -> Holdings:
        """In one read: how many of ``org_id``'s sandboxes are live (starting, running or
        paused; 0 without an org), the MiB of disk promised to every org's live and
        hibernated sandboxes, and of memory to the live ones
        (``corral.services.admission``)."""

    async def update(self, sandbox: Sandbox) -> None:
        """Replace the row with the same id. NotFound for none; Conflict when that row
        is stopped and ``sandbox`` is not (a write from a read taken before a kill)."""

    async def set_status(
        self, sandbox_id: str, was: SandboxStatus, now: SandboxStatus, last_active_at: datetime
    ) -> bool:
        """Set the status to ``now`` and last_active_at, if the status is ``was``, in one
        statement (the rest of the row is left as it is); whether it was."""

    async def mark_stopped(self, sandbox_id: str, ended_at: datetime, error: str | None) -> None:
        """Set the status to stopped, ``ended_at`` and ``error`` (the rest of the row is
        left as it is). NotFound if there is no such row."""

    async def touch(self, times: Mapping[str, datetime]) -> None:
        """Set the last_active_at of each sandbox id in ``times`` to its time, in one
        transaction (ids without a row are skipped)."""


class PreviewStore(Protocol):
    """Persistence of preview URLs and of each sandbox's preview token hash. One preview
    per (sandbox, port)."""

    async def add(self, preview: Preview) -> None:
        """Conflict if the sandbox already has a preview of that port."""

    async def list(self, sandbox_id: str) -> builtins.list[Preview]:
        """By port."""

    async def remove(self, sandbox_id: str, port: int) -> bool:
        """False when there was none."""

    async def set_token_hash(self, sandbox_id: str, token_hash: str | None) -> None:
        """NotFound for an unknown sandbox."""


class Snapshotter(Protocol):
    """Copies and lays sandboxes' disks on this node: a sandbox's writable layer (its
    filesystem changes over its template). Kept to disks, as containerd's snapshotters
    are: stopping and starting the sandbox on its disk is the Runtime's (``hibernate``,
    ``resume``). Process memory is never captured (no CRIU on this kernel): whatever
    starts from a disk starts with fresh processes.

    Every method validates the id (InvalidInput), raises only corral errors, and holds
    the lock of the sandbox that its runtime's operations hold, so it is ordered with
    create, destroy, hibernate and resume of the same sandbox.
    """

    async def snapshot(self, sandbox_id: str, target: Path) -> int:
        """Write a consistent copy of the sandbox's disk into ``target`` (an existing,
        empty directory) and return the bytes it occupies. A running sandbox is frozen
        for the copy and thawed afterwards whatever happens; a hibernated one is copied
        as it lies. NotFound when the sandbox has no disk here."""

    async def restore(self, sandbox_id: str, source: Path) -> None:
        """Replace the disk of a hibernated sandbox with a copy of the snapshot in
        ``source``. The swap is atomic: a failure (or crash) leaves the old disk or the
        new one, never a mix. NotFound without a disk; Conflict while it runs."""

    async def fork(self, sandbox_id: str, source: Path) -> None:
        """Lay the disk of a new sandbox ``sandbox_id``: a copy of the snapshot in
        ``source``, for ``Runtime.resume(spec, forked=True)`` to start. Conflict if the
        id has any trace here; all or nothing (a crash may leave a sandbox dir that
        ``Runtime.reclaim`` removes)."""

    async def has_disk(self, sandbox_id: str) -> bool:
        """Whether the sandbox's disk is on this node (running or hibernated)."""

    async def recover(self, sandbox_id: str) -> None:
        """Thaw whatever a crash in the middle of ``snapshot`` left frozen. Idempotent
        and cheap when nothing is frozen."""


class CheckpointStore(Protocol):
    """Persistence of checkpoints and their patches. Every lookup is scoped by org;
    another org's checkpoint is NotFound."""

    async def add(self, checkpoint: Checkpoint) -> None:
        """Conflict if the sandbox already has a checkpoint of that name."""

    async def get(self, org_id: str, checkpoint_id: str) -> Checkpoint:
        """NotFound if absent or another org's."""

    async def list(self, org_id: str, sandbox_id: str) -> builtins.list[Checkpoint]:
        """Oldest first."""

    async def list_all(self) -> builtins.list[Checkpoint]: ...

    async def update(self, checkpoint: Checkpoint) -> None: ...

    async def remove(self, checkpoint_id: str) -> None:
        """Remove the checkpoint and its patches; idempotent."""

    async def add_patch(self, org_id: str, checkpoint_id: str, script: str, description: str) -> Patch:
        """Append a patch with the checkpoint's next sequence number (1, 2, ...; never
        reused, also after deletes). NotFound for an unknown checkpoint."""

    async def patches(self, checkpoint_id: str) -> builtins.list[Patch]:
        """By sequence."""

    async def remove_patch(self, checkpoint_id: str, patch_id: str) -> bool:
        """False when there was none."""


class CheckpointFiles(Protocol):
    """Where checkpoints' files live, and their metadata (``runtime/checkpoint_dirs.py``).
    Methods raise OSError."""

    def path(self, checkpoint_id: str) -> Path:
        """The finished checkpoint's directory (a Snapshotter's ``source``)."""

    async def stage(self, checkpoint_id: str) -> Path:
        """A new, empty directory for a Snapshotter's ``snapshot``."""

    async def commit(self, checkpoint: Checkpoint, runtime: str) -> None:
        """Write the metadata, make the staged files durable and rename them into place."""

    async def exists(self, checkpoint_id: str) -> bool: ...

    async def discard(self, checkpoint_id: str) -> None:
        """Remove its files, staged or finished; idempotent."""

    async def sweep(self, keep: set[str]) -> builtins.list[str]:
        """Remove every staged checkpoint and every one not in ``keep``."""


class TemplateBuildStore(Protocol):
    """Persistence of Dockerfile templates: one row per (org, name)."""

    async def put(self, build: TemplateBuild) -> None:
        """Insert or replace the row of ``build.id``."""

    async def get(self, org_id: str, name: str) -> TemplateBuild | None:
        """The org's template of that name (another org's is None)."""

    async def list(self, org_id: str | None = None) -> builtins.list[TemplateBuild]:
        """The org's templates; every org's for None (the node itself: recovery)."""

    async def remove(self, org_id: str, name: str) -> None: ...


class Builder(Protocol):
    """Builds template roots from Dockerfiles (``runtime/builder.py``: buildah)."""

    async def build(
        self, name: str, dockerfile: str, log: Callable[[str], None], usable: Mapping[str, str]
    ) -> Template:
        """Build and publish ``name`` (content-addressed beside the other templates);
        ``log`` gets the builder's output line by line. ``usable``: the templates a
        ``FROM`` may name, as written -> their name here (no other template is
        reachable). InvalidInput for a Dockerfile that does not parse, RuntimeFailure (with the builder's error) for one that does
        not build; either way nothing half-built is left."""

    async def remove(self, name: str) -> None:
        """Remove every build of ``name``. Conflict while a running sandbox's root is
        mounted over one."""


class KeyStore(Protocol):
    """Persistence of orgs and their API keys (only a hash of each secret is kept)."""

    revocations: Path | None
    """A file whose change time moves with every revocation by any process on the same
    store (None where the store cannot say: then caches expire by time)."""

    async def add_org(self, org_id: str, name: str) -> Org:
        """Conflict (naming ``name``) when an org of that name exists."""

    async def org_by_name(self, name: str) -> Org:
        """NotFound (naming ``org``) for an unknown name."""

    async def list_orgs(self) -> builtins.list[Org]:
        """Oldest first."""

    async def add_key(self, key: ApiKey) -> None: ...

    async def get_key(self, key_id: str) -> ApiKey | None:
        """Revoked keys too (``revoked_at`` set); None for an unknown id."""

    async def list_keys(self, org_id: str) -> builtins.list[ApiKey]:
        """Oldest first, revoked ones included."""

    async def count_keys(self) -> int: ...

    async def mark_used(self, key_id: str) -> None:
        """Set ``last_used_at`` to now."""

    async def revoke(self, org_id: str, key_id: str) -> None:
        """Idempotent (the first revocation time is kept); NotFound for an unknown key
        or another org's. Stamps ``revocations``."""

    def stamp_revocation(self) -> None:
        """Move ``revocations`` on (a user removed or given another role)."""


class UserStore(Protocol):
    """Persistence of users: people of an org, named by the ``sub`` of their JWTs."""

    async def add(self, user: User) -> None:
        """Conflict (naming ``email``) when the email is taken, in any org."""

    async def get(self, user_id: str) -> User | None: ...

    async def by_email(self, email: str) -> User:
        """NotFound (naming ``email``) for an unknown email."""

    async def remove(self, user_id: str) -> None:
        """Idempotent."""

    async def set_role(self, user_id: str, role: str) -> None: ...

    async def list(self, org_id: str) -> builtins.list[User]:
        """Oldest first."""


class EventStore(Protocol):
    """The append-only audit trail."""

    async def append(self, events: Sequence[Event]) -> None:
        """Write a batch, all or nothing; nothing written is ever changed or removed."""

    async def page(
        self,
        org_id: str,
        *,
        sandbox_id: str | None = None,
        kinds: Sequence[str] = (),
        actor: str | None = None,
        limit: int = 100,
        cursor: int | None = None,
        newest: bool = True,
    ) -> EventPage:
        """One org's events (of one sandbox, of some kinds, by one actor: its key id or
        client id) by id, newest first or oldest first, after the id ``cursor``; the
        cursor is stable while rows keep arriving."""


class SwitchStore(Protocol):
    """Kill switches: one per engaged scope (an org id, or ``domain.killswitch.GLOBAL``)."""

    async def engage(self, scope: str, reason: str = "") -> None:
        """Idempotent: the first time and reason are kept."""

    async def release(self, scope: str) -> None:
        """A no-op for a switch that is not engaged."""

    async def engaged(self) -> builtins.list[Switch]:
        """Oldest first."""


class BindingStore(Protocol):
    """An org's service bindings (``corral.domain.bindings``), secrets included."""

    async def add(self, binding: Binding) -> None:
        """Conflict (naming ``name``) when the org has a binding of that name."""

    async def get(self, org_id: str, name: str) -> Binding | None: ...

    async def list(self, org_id: str) -> builtins.list[Binding]:
        """By name."""

    async def remove(self, org_id: str, name: str) -> bool:
        """Whether there was one."""


BindingCallFn = Callable[[str, str, dict[str, object]], Awaitable[None]]
"""Called with a sandbox id, its org and one call it made through the forwarder
(binding, method, path, status; never the secret)."""


class Forwarder(Protocol):
    """The endpoint through which sandboxes call their bindings: requests in plain HTTP
    from the sandbox, forwarded upstream with the binding's secret added
    (``corral.network.forwarder``). Grants live in memory only."""

    def grant(self, sandbox_id: str, address: str, bindings: Sequence[Binding]) -> dict[str, str]:
        """Let the sandbox at ``address`` call ``bindings`` (added to those granted
        before); each binding's name -> the base URL the sandbox calls it at."""

    def revoke(self, sandbox_id: str) -> None:
        """Refuse the sandbox's calls from now on. Idempotent."""


class WebhookPoster(Protocol):
    """POSTs from corral's host to a tenant's URL (``corral.network.webhook``)."""

    async def post(self, url: str, body: bytes, timeout: float) -> int:
        """POST ``body`` (JSON) to ``url`` within ``timeout`` seconds; the answer's
        status. Unavailable when it could not be sent or answered (a refused
        destination, connection, TLS, timeout)."""


class MessagesApi(Protocol):
    """The Anthropic Messages API, called from corral's host with corral's key
    (``corral.network.anthropic``)."""

    async def create(self, body: Mapping[str, object]) -> tuple[int, object]:
        """POST ``body`` to ``/v1/messages`` (not streamed); the answer's status and its
        JSON (None when it was not JSON). Unavailable when there was no answer (a
        connection, TLS or timeout failure); the message never holds the key."""

    async def close(self) -> None:
        """Release its connections. Idempotent."""
