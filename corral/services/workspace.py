"""The workspace shape of a sandbox (the xgen surface, spec 002): commands run as the
user ``sandbox`` (uid 1000) in ``/home/sandbox/workspace``, and file paths are taken
under that workspace and never lead out of it.

Contracts:
- ``prepare`` makes the user and the workspace where the template lacks them (a
  passwd/group entry for uid 1000, the home and the workspace owned by it; with
  ``sudo``, a sudoers entry where sudo is installed). It runs as root through the
  agent, once per sandbox per server (idempotent, so a restart runs it again
  harmlessly); every command and file operation here calls it first.
- ``path``: a client's path, relative or absolute, is taken under the workspace and
  normalised; a ``..`` that climbs out of it is InvalidInput. The agent
  then resolves it in the sandbox with ``within`` the workspace, so a symlink in the
  workspace that leads out is Forbidden. The check and the open are two steps in the
  agent (which runs as root): a process of the sandbox racing a symlink between them
  could redirect one operation; no path ever reaches the host.
- Files written here belong to uid 1000, as do the directories made for them.
- Scopes: as the services below (exec for commands, read/write for files).
"""

from __future__ import annotations

import builtins
import posixpath
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import DiskUsage, ExecRequest, ExecResult, FileChange, FileEntry, SessionInfo, SessionSpec
from corral.domain.usage import Usage
from corral.errors import InvalidInput, NotFound, SandboxError
from corral.ports import FileChunks
from corral.services.audit import AuditKind, clip
from corral.services.commands import CommandService
from corral.services.files import about_path
from corral.services.sandboxes import SandboxService

WORKSPACE = "/home/sandbox/workspace"
HOME = "/home/sandbox"
USER = "sandbox"
UID = 1000
LIST_MAX = 10_000  # entries of one listing, at most
_PREPARED_MAX = 100_000

_PREPARE = f"""set -e
if ! getent passwd {UID} >/dev/null 2>&1; then
  getent group {UID} >/dev/null 2>&1 || echo '{USER}:x:{UID}:' >> /etc/group
  echo '{USER}:x:{UID}:{UID}:{USER}:{HOME}:/bin/bash' >> /etc/passwd
fi
mkdir -p {WORKSPACE}
chown {UID}:{UID} {HOME} {WORKSPACE}
"""
_SUDO = f"""if [ -d /etc/sudoers.d ]; then
  echo '{USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{USER} && chmod 0440 /etc/sudoers.d/{USER}
fi
"""


def path(client_path: object, field: str = "path") -> str:
    """The absolute path in the sandbox for a client's path: relative to the workspace;
    an absolute one inside the workspace as it is, any other under the workspace
    (``/etc/x`` is ``<workspace>/etc/x``). InvalidInput naming ``field`` for a missing
    or malformed one, and for one whose ``..`` climbs out of the workspace."""
    if not isinstance(client_path, str) or not client_path:
        raise InvalidInput(f"{field} is required", field=field)
    if "\0" in client_path or len(client_path) > 4096:
        raise InvalidInput(f"{field} is malformed", field=field)
    if client_path == WORKSPACE or client_path.startswith(WORKSPACE + "/"):
        client_path = client_path[len(WORKSPACE) :]
    target = posixpath.normpath(posixpath.join(WORKSPACE, client_path.lstrip("/")))
    if target != WORKSPACE and not target.startswith(WORKSPACE + "/"):
        raise InvalidInput(f"{field} leads outside the workspace", field=field)
    return target


def relative(sandbox_path: str) -> str:
    """A sandbox path as the client names it: relative to the workspace."""
    return posixpath.relpath(sandbox_path, WORKSPACE) if sandbox_path.startswith(WORKSPACE) else sandbox_path


def user_envs(envs: dict[str, str]) -> dict[str, str]:
    """What commands of the workspace's user get, under the caller's own envs."""
    return {"HOME": HOME, "USER": USER, "LOGNAME": USER, **envs}


class WorkspaceService:
    def __init__(self, sandboxes: SandboxService, commands: CommandService) -> None:
        self.sandboxes = sandboxes
        self.commands = commands
        self._prepared: set[str] = set()

    async def prepare(self, principal: Principal, sandbox_id: str, *, sudo: bool = False) -> None:
        """The user and the workspace (see the module docstring)."""
        if sandbox_id in self._prepared and not sudo:
            return
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        script = _PREPARE + (_SUDO if sudo else "")
        result = await agent.exec(ExecRequest("/bin/sh", ("-c", script), user="root", timeout_s=30))
        if result.exit_code != 0:
            detail = result.stderr.decode(errors="replace").strip()[-300:]
            raise SandboxError(f"the workspace could not be prepared: {detail or result.exit_code}")
        if len(self._prepared) >= _PREPARED_MAX:
            self._prepared.clear()
        self._prepared.add(sandbox_id)

    # ---- commands --------------------------------------------------------------------

    async def run(self, principal: Principal, sandbox_id: str, req: ExecRequest) -> ExecResult:
        """``CommandService.run`` as the workspace's user, in the workspace by default."""
        require(principal, Scope.SANDBOX_EXEC)
        await self.prepare(principal, sandbox_id)
        as_user = ExecRequest(
            req.cmd, req.args, user_envs(req.envs), req.cwd or WORKSPACE, req.timeout_s, str(UID)
        )
        return await self.commands.run(principal, sandbox_id, as_user)

    async def start(self, principal: Principal, sandbox_id: str, spec: SessionSpec) -> SessionInfo:
        """``CommandService.start_session`` (a PTY with ``spec.pty``) as the workspace's
        user, in the workspace by default."""
        require(principal, Scope.SANDBOX_EXEC)
        await self.prepare(principal, sandbox_id)
        as_user = SessionSpec(
            spec.cmd,
            spec.args,
            user_envs(spec.envs),
            spec.cwd or WORKSPACE,
            spec.timeout_s,
            spec.max_run_after_disconnect_s,
            spec.pty,
            str(UID),
            hold_output=True,  # attached right after: none of its output is lost before
        )
        return await self.commands.start_session(principal, sandbox_id, as_user)

    # ---- files -----------------------------------------------------------------------

    async def read(
        self, principal: Principal, sandbox_id: str, client_path: object
    ) -> AbstractAsyncContextManager[FileChunks]:
        require(principal, Scope.SANDBOX_READ)
        target = path(client_path)
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        with about_path():
            return await agent.read_file(target, within=WORKSPACE)

    async def write(
        self,
        principal: Principal,
        sandbox_id: str,
        client_path: object,
        chunks: AsyncIterable[bytes],
        mode: int,
    ) -> int:
        require(principal, Scope.SANDBOX_WRITE)
        target = path(client_path)
        if target == WORKSPACE:
            raise InvalidInput("path must name a file", field="path")
        await self.prepare(principal, sandbox_id)
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        with about_path():
            size = await agent.write_file(target, chunks, mode, within=WORKSPACE, owner=UID)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.FILE_WRITTEN, sandbox_id, path=clip(target), bytes=size
        )
        return size

    async def list(self, principal: Principal, sandbox_id: str, client_path: object) -> list[FileEntry]:
        """One level of a directory, in name order, at most LIST_MAX entries."""
        require(principal, Scope.SANDBOX_READ)
        target = path(client_path or ".")
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        entries: list[FileEntry] = []
        after: str | None = None
        with about_path():
            while len(entries) < LIST_MAX:
                page = await agent.list_dir(target, after, LIST_MAX - len(entries), within=WORKSPACE)
                entries += page.entries
                after = page.next
                if after is None:
                    break
        return entries

    async def remove(
        self, principal: Principal, sandbox_id: str, client_path: object, recursive: bool
    ) -> None:
        """rm (``recursive``: rm -r); InvalidInput for a directory that is not empty
        without ``recursive``, and for the workspace itself."""
        require(principal, Scope.SANDBOX_WRITE)
        target = path(client_path)
        if target == WORKSPACE:
            raise InvalidInput("refusing to remove the workspace", field="path")
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        with about_path():
            found = await agent.stat(target, within=WORKSPACE)
            if found is None:
                raise NotFound(f"{relative(target)}: no such file or directory", field="path")
            if (
                found.is_dir
                and not recursive
                and (await agent.list_dir(target, None, 1, within=WORKSPACE)).entries
            ):
                raise InvalidInput(f"{relative(target)}: directory not empty (send recursive)", field="path")
            await agent.remove(target, within=WORKSPACE)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.FILE_REMOVED, sandbox_id, path=clip(target)
        )

    async def watch(
        self, principal: Principal, sandbox_id: str, client_path: object
    ) -> AbstractAsyncContextManager[AsyncIterator[FileChange]]:
        """Changes under a directory of the workspace (see ``Files.watch``)."""
        require(principal, Scope.SANDBOX_READ)
        target = path(client_path or ".")
        await self.prepare(principal, sandbox_id)
        agent = await self.sandboxes.files_of(principal, sandbox_id)
        return agent.watch(target, within=WORKSPACE)

    # ---- what the sandbox uses -------------------------------------------------------

    async def ports(self, principal: Principal, sandbox_id: str) -> builtins.list[int]:
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        return await agent.ports()

    async def usage(self, principal: Principal, sandbox_id: str) -> tuple[Usage, DiskUsage]:
        """The runtime's reading of the sandbox's cgroups, and its disk as the agent
        sees it."""
        usage = await self.sandboxes.usage(principal, sandbox_id)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        return usage, await agent.disk()
