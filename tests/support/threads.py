"""MemoryThreadStore: the ``ThreadStore`` of services/runs.py in memory, for service
tests (the SQL one is corral/store/threads.py; tests/unit/store/test_threads.py holds
both to the same contract)."""

from __future__ import annotations

from corral.domain.runs import Message, Run, RunStatus, Thread
from corral.errors import NotFound


class MemoryThreadStore:
    def __init__(self) -> None:
        self.threads: dict[str, Thread] = {}
        self.messages_: dict[str, Message] = {}  # in the order added
        self.runs: dict[str, Run] = {}

    async def add_thread(self, thread: Thread) -> None:
        self.threads[thread.id] = thread

    async def update_thread(self, thread: Thread) -> None:
        if thread.id in self.threads:
            self.threads[thread.id] = thread

    async def get_thread(self, org_id: str, thread_id: str) -> Thread:
        found = self.threads.get(thread_id)
        if found is None or found.org_id != org_id:
            raise NotFound(f"thread {thread_id} not found")
        return found

    async def add_message(self, message: Message) -> None:
        self.messages_[message.id] = message

    async def update_message(self, message: Message) -> None:
        if message.id in self.messages_:
            self.messages_[message.id] = message

    async def messages(self, thread_id: str) -> list[Message]:
        return [m for m in self.messages_.values() if m.thread_id == thread_id]

    async def add_run(self, run: Run) -> None:
        self.runs[run.id] = run

    async def update_run(self, run: Run) -> None:
        if run.id in self.runs:
            self.runs[run.id] = run

    async def get_run(self, thread_id: str, run_id: str) -> Run:
        found = self.runs.get(run_id)
        if found is None or found.thread_id != thread_id:
            raise NotFound(f"run {run_id} not found")
        return found

    async def unfinished_runs(self) -> list[Run]:
        return [r for r in self.runs.values() if r.status in (RunStatus.QUEUED, RunStatus.RUNNING)]
