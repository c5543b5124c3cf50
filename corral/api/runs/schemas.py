"""The agent-runs bodies (spec 004 and its supplement), in their names and casing.
Requests are strict (a string where one is due, an integer duration); unknown fields
are ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr


class PromptsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    userPrompt: StrictStr
    goalPrompt: StrictStr | None = None  # absent: the user prompt
    systemPrompt: StrictStr | None = None


class CreateSessionIn(BaseModel):
    """``{prompt}``, or ``{prompts, template?, duration?}``."""

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr | None = None
    prompts: PromptsIn | None = None
    template: StrictStr | None = None
    duration: StrictInt | None = None  # seconds of the desktop's first lifetime


class CreateSessionOut(BaseModel):
    threadId: str
    messageId: str


class StartRunIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: StrictStr


class StartRunOut(BaseModel):
    threadId: str
    runId: str
    publicAccessToken: str
    messageId: str


class MetadataOut(BaseModel):
    sandboxId: str | None = None
    vncUrl: str | None = None
    sandboxStatus: str | None = None  # initializing | ready | restored | failed


class RunOut(BaseModel):
    id: str
    threadId: str
    status: str  # QUEUED | RUNNING | COMPLETED | FAILED | CANCELED
    isCompleted: bool
    isErrored: bool
    error: str | None = None
    createdAt: str
    startedAt: str | None = None
    finishedAt: str | None = None
    metadata: MetadataOut


class MessageOut(BaseModel):
    id: str
    role: str  # user | assistant | system | action
    content: str
    createdAt: str
    runId: str | None = None
    action: dict[str, Any] | None = None
    status: str | None = None  # an action's: running | done | failed
    detail: str | None = None


class PromptsOut(BaseModel):
    userPrompt: str
    goalPrompt: str
    systemPrompt: str | None = None


class ThreadOut(BaseModel):
    id: str
    createdAt: str
    prompts: PromptsOut
    metadata: MetadataOut
    messages: list[MessageOut]


class ThreadEnvelope(BaseModel):
    thread: ThreadOut


class ExtendIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sandboxId: StrictStr


class ExtendOut(BaseModel):
    success: Literal[True] = True
    message: str = "Sandbox lifecycle extended by 15 minutes"
    sandboxId: str
    expiresAt: str


class ErrorBody(BaseModel):
    code: str
    message: str
    hint: str | None = None
    requestId: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
