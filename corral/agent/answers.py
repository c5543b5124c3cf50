"""The agent's answers as pydantic models (docs/agent-protocol.md), validated strictly.

An answer comes from an untrusted agent. ``parse`` validates one (a JSON object that
``wire.json_answer`` has already checked for ``ok``) in pydantic's strict mode: no
coercion (``true`` is not an integer, ``"80"`` not a port), finite numbers only, every
field this side reads present; fields it does not read are ignored, so a newer agent
may add some. Anything else is ``AgentError`` naming the field, never another
exception. Sizes and counts are bounded where a bad value would do harm (ports,
lengths, timestamps); the caller checks what depends on its request (a page's order, a
write's byte count).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.domain import FileEntry, SessionInfo
from corral.errors import AgentError

Port = Annotated[int, Field(gt=0, lt=65536)]
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z: what a datetime can hold


class Answer(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="ignore")


class Pong(Answer):
    version: str
    pid: int


class Executed(Answer):
    timed_out: bool = Field(alias="timedOut")
    exit_code: int = Field(alias="exitCode")
    truncated: bool = False


class Session(Answer):
    id: str
    cmd: str
    args: list[str]
    running: bool
    exit_code: int | None = Field(default=None, alias="exitCode")
    started_at: float = Field(alias="startedAt", ge=-MAX_TIMESTAMP, le=MAX_TIMESTAMP)
    attached_clients: int = Field(alias="attachedClients")
    pty: bool

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            cmd=self.cmd,
            args=tuple(self.args),
            running=self.running,
            exit_code=self.exit_code,
            started_at=datetime.fromtimestamp(self.started_at, tz=UTC),
            attached_clients=self.attached_clients,
            pty=self.pty,
        )


class OneSession(Answer):
    session: Session


class Sessions(Answer):
    sessions: list[Session]


class Entry(Answer):
    name: str
    path: str
    is_dir: bool = Field(alias="isDir")
    size: int
    mode: int
    mtime: float
    is_symlink: bool = Field(alias="isSymlink")

    def entry(self) -> FileEntry:
        return FileEntry(self.name, self.path, self.is_dir, self.size, self.mode, self.mtime, self.is_symlink)


class Stat(Answer):
    entry: Entry | None = None


class Listing(Answer):
    entries: list[Entry]
    next: str | None = None


class Opened(Answer):
    """``file.read``: the file's size, and ``length``, what its DATA frames add up to
    (agents before 2026-12 send none)."""

    size: int
    length: int | None = Field(default=None, ge=0)


class Written(Answer):
    written: int


class Ports(Answer):
    ports: list[Port]


class Disk(Answer):
    total: int = Field(ge=0)
    used: int = Field(ge=0)


class Change(Answer):
    """One ``file.watch`` event."""

    path: str
    type: Literal["created", "modified", "deleted"]
    dropped: int = Field(default=0, ge=0)


class Watched(Answer):
    event: Change


A = TypeVar("A", bound=Answer)


def parse(model: type[A], answer: dict[str, Any]) -> A:
    """``answer`` as ``model``; AgentError naming the first field that is wrong."""
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "answer"
        raise AgentError(f"agent answer: {where}: {error['msg']}") from None
