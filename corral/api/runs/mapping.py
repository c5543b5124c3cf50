"""Agent-runs bodies to the run service's requests, threads, messages and runs to
bodies: the only place that knows both."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from corral.api.runs.schemas import (
    CreateSessionIn,
    MessageOut,
    MetadataOut,
    PromptsOut,
    RunOut,
    ThreadOut,
)
from corral.domain.runs import DesktopInfo, Message, Run, Thread
from corral.domain.sessions import Frame
from corral.errors import InvalidInput
from corral.services.runs import NewThread


def new_thread(body: CreateSessionIn) -> NewThread:
    """InvalidInput naming ``prompt`` when the body has neither form, or both."""
    if (body.prompt is None) == (body.prompts is None):
        raise InvalidInput("send either prompt or prompts: {userPrompt, goalPrompt}", field="prompt")
    if body.prompt is not None:
        return NewThread(body.prompt, body.prompt, None, body.template, body.duration)
    prompts = body.prompts
    assert prompts is not None
    goal, goal_field = prompts.goalPrompt, "prompts.goalPrompt"
    if goal is None:
        goal, goal_field = prompts.userPrompt, "prompts.userPrompt"
    return NewThread(
        prompts.userPrompt,
        goal,
        prompts.systemPrompt,
        body.template,
        body.duration,
        fields=("prompts.userPrompt", goal_field, "prompts.systemPrompt"),
    )


def metadata(desktop: DesktopInfo) -> MetadataOut:
    return MetadataOut(
        sandboxId=desktop.sandbox_id,
        vncUrl=desktop.vnc_url,
        sandboxStatus=desktop.status.value if desktop.status else None,
    )


def run_out(run: Run) -> RunOut:
    return RunOut(
        id=run.id,
        threadId=run.thread_id,
        status=run.status.value,
        isCompleted=run.is_completed,
        isErrored=run.is_errored,
        error=run.error,
        createdAt=_time(run.created_at),
        startedAt=_time(run.started_at) if run.started_at else None,
        finishedAt=_time(run.finished_at) if run.finished_at else None,
        metadata=metadata(run.desktop),
    )


def message_out(message: Message) -> MessageOut:
    return MessageOut(
        id=message.id,
        role=message.role.value,
        content=message.content,
        createdAt=_time(message.created_at),
        runId=message.run_id,
        action=message.action,
        status=message.status.value if message.status else None,
        detail=message.detail,
    )


def thread_out(thread: Thread, messages: list[Message]) -> ThreadOut:
    return ThreadOut(
        id=thread.id,
        createdAt=_time(thread.created_at),
        prompts=PromptsOut(
            userPrompt=thread.prompts.user, goalPrompt=thread.prompts.goal, systemPrompt=thread.prompts.system
        ),
        metadata=metadata(thread.desktop),
        messages=[message_out(m) for m in messages],
    )


def event(frame: Frame) -> dict[str, str]:
    """A frame as sse-starlette's event: its kind, its data as JSON with ``ts``."""
    data = {**frame.data, "ts": _time(frame.ts)}
    return {"event": frame.kind, "data": json.dumps(data, separators=(",", ":"))}


def time_of(moment: datetime) -> str:
    return _time(moment)


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
