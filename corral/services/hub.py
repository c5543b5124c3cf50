"""What several parts of the server must hear, published in process.

One ``Topic`` per kind of event, each carrying one typed value:

    sandbox_stopped   a sandbox id: it no longer runs on this node (killed, idle timeout,
                      lost at start-up, hibernated, paused); caches of running sandboxes and
                      of the gateway's routes drop it
    sandbox_paused    a sandbox just paused, as its row says (after its sandbox_stopped):
                      the sandbox service remembers it, so the use that resumes it reads
                      nothing from the store
    key_revoked       an API key id, revoked through this process; caches of verified
                      keys drop it (revocations by other processes are seen through the
                      key store's ``revocations`` file)

Contracts: subscribers are registered when the server is wired (``corral.core``,
``corral.api.app`` for the gateway), before anything is published. ``publish`` calls
every subscriber at once, in the order they subscribed, and returns when all have
been called; a subscriber that raises is logged and the others are called all the
same: the publisher never sees a subscriber's error. Subscribers are plain functions:
what they do must not wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from corral.domain import Sandbox

log = logging.getLogger("corral.hub")

T = TypeVar("T")


class Topic(Generic[T]):
    """One kind of event and the functions that hear it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscribers: list[Callable[[T], None]] = []

    def subscribe(self, subscriber: Callable[[T], None]) -> None:
        self._subscribers.append(subscriber)

    def publish(self, value: T) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(value)
            except Exception:  # the publisher's work is done; one listener's failure stays its own
                log.exception("a subscriber of %s failed on %r", self.name, value)


@dataclass(frozen=True)
class Hub:
    """The topics of the server (see the module docstring)."""

    sandbox_stopped: Topic[str] = field(default_factory=lambda: Topic("sandbox_stopped"))
    sandbox_paused: Topic[Sandbox] = field(default_factory=lambda: Topic("sandbox_paused"))
    key_revoked: Topic[str] = field(default_factory=lambda: Topic("key_revoked"))
