"""The audit trail's records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Event:
    """One audit record. ``id`` is None until the store has it."""

    at: datetime
    org_id: str
    kind: str
    sandbox_id: str | None = None
    key_id: str | None = None
    client_id: str | None = None
    data: dict[str, object] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    next_cursor: int | None  # None: this was the last page
