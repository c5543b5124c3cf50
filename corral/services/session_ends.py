"""The end of exec sessions and PTYs, for the audit trail.

A session ends inside the sandbox's agent, usually long after the request that started
it, and often with nobody attached. ``SessionEnds.follow`` polls the agent for the
session (every 0.25 s at first, backing off to every ``max_interval_s``) and records
``exec_ended`` with its exit code once it stopped running; when the session or its
sandbox is gone first (killed, timed out), the record says so instead (``exit_code``
None and a ``reason``). Following stops on ``close``: sessions that end while corral
is down (they outlive it) have no ``exec_ended`` record.
"""

from __future__ import annotations

import asyncio
import logging

from corral.auth.principal import Principal
from corral.errors import CorralError, NotFound
from corral.ports import Processes
from corral.services.audit import AuditKind, AuditService

log = logging.getLogger("corral.audit")

MAX_FOLLOWED = 10_000


class SessionEnds:
    def __init__(self, audit: AuditService, max_interval_s: float = 5.0) -> None:
        self.audit = audit
        self.max_interval_s = max_interval_s
        self._tasks: set[asyncio.Task[None]] = set()

    def follow(self, principal: Principal, sandbox_id: str, agent: Processes, session_id: str) -> None:
        if len(self._tasks) >= MAX_FOLLOWED:
            log.warning(
                "following %d sessions already; the end of %s is not recorded", MAX_FOLLOWED, session_id
            )
            return
        task = asyncio.create_task(
            self._follow(principal, sandbox_id, agent, session_id), name=f"follow-{session_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _follow(self, principal: Principal, sandbox_id: str, agent: Processes, session_id: str) -> None:
        delay = 0.25
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_interval_s)
            try:
                info = await agent.session(session_id)
            except NotFound:
                await self._ended(principal, sandbox_id, session_id, None, "session gone")
                return
            except CorralError:
                await self._ended(principal, sandbox_id, session_id, None, "sandbox unreachable")
                return
            if not info.running:
                await self._ended(principal, sandbox_id, session_id, info.exit_code, None)
                return

    async def _ended(
        self,
        principal: Principal,
        sandbox_id: str,
        session_id: str,
        exit_code: int | None,
        reason: str | None,
    ) -> None:
        data: dict[str, object] = {"exec": session_id, "exit_code": exit_code}
        if reason:
            data["reason"] = reason
        await self.audit.record_for(principal, AuditKind.EXEC_ENDED, sandbox_id, **data)
