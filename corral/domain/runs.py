"""Agent runs (spec 004, the ``/api/sessions`` surface): threads, their messages, runs.

A thread is a conversation with a computer-use agent about one desktop (a sandbox of
the ``gui`` template); a run is one turn of the agent on it. Plain records, no I/O:
``services/runs.py`` keeps them (through a ``ThreadStore``) and drives the runs.

Contracts:
- Ids: a thread and a message are UUIDs (as the spec's answers show); a run is
  ``run_`` and 24 lowercase base-36 characters (``new_run_id``, ``is_run_id``).
- A run goes ``QUEUED`` -> ``RUNNING`` -> ``COMPLETED`` | ``FAILED`` | ``CANCELED``;
  ``terminal`` says it will not change again; ``error`` says why a run failed.
- ``DesktopInfo`` is the run's and the thread's ``metadata``: the desktop's sandbox,
  its noVNC URL and its status (``initializing``, ``ready``, ``restored``, ``failed``).
- An action message holds the computer action the model asked for (``action``: the
  tool input, e.g. ``{"action": "left_click", "coordinate": [10, 20]}``) and its status
  (``running``, ``done``, ``failed``, with ``detail`` saying why it failed).
"""

from __future__ import annotations

import enum
import re
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_RUN_ID = re.compile(r"^run_[a-z0-9]{24}$")
_ALPHABET = string.ascii_lowercase + string.digits


class RunStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


class DesktopStatus(enum.StrEnum):
    INITIALIZING = "initializing"  # provisioning asked
    READY = "ready"  # reachable: sandbox_id and vnc_url valid
    RESTORED = "restored"  # the thread's desktop, reused by a later run
    FAILED = "failed"  # provisioning failed: no desktop


class Author(enum.StrEnum):
    """Who a message is from (its ``role``)."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    ACTION = "action"


class ActionStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class DesktopInfo:
    sandbox_id: str | None = None
    vnc_url: str | None = None
    status: DesktopStatus | None = None


@dataclass(frozen=True)
class Prompts:
    user: str
    goal: str
    system: str | None = None


@dataclass(frozen=True)
class Thread:
    id: str
    org_id: str
    created_by: str  # Principal.subject of its creator
    prompts: Prompts
    lifetime_s: int  # its desktop's first lifetime
    created_at: datetime
    desktop: DesktopInfo = DesktopInfo()


@dataclass(frozen=True)
class Message:
    id: str
    thread_id: str
    role: Author
    content: str
    created_at: datetime
    run_id: str | None = None
    action: dict[str, Any] | None = None  # an action message's computer action (the tool input)
    status: ActionStatus | None = None  # an action message's
    detail: str | None = None  # why an action failed


@dataclass(frozen=True)
class Run:
    id: str
    thread_id: str
    org_id: str
    status: RunStatus
    token_hash: str  # sha256 of its publicAccessToken (hex)
    created_at: datetime
    desktop: DesktopInfo = DesktopInfo()
    steps: int = 0  # model calls made
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def is_completed(self) -> bool:
        return self.status.terminal

    @property
    def is_errored(self) -> bool:
        return self.status is RunStatus.FAILED


def new_uuid() -> str:
    return str(uuid.uuid4())


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def new_run_id() -> str:
    return "run_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def is_run_id(value: str) -> bool:
    return bool(_RUN_ID.fullmatch(value))
