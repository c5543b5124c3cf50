"""Spec 001's bodies to domain requests, and domain records to spec 001's bodies: the
only module that knows both (the JSON of a session is ``corral.domain.session_json``'s,
which the webhook sends too)."""

from __future__ import annotations

import json
from typing import Any

from corral.api.enclave.schemas import AuditEventOut, CreateSessionRequest, SessionOut, SessionResultOut
from corral.domain import Event
from corral.domain.session_json import result_json, session_json, ts
from corral.domain.sessions import (
    CodeSession,
    Frame,
    LimitBounds,
    SessionRequest,
    SessionResult,
    check_bindings,
    check_code,
    check_labels,
    check_language,
    egress_of,
    limits_of,
)


def request_of(body: CreateSessionRequest, bounds: LimitBounds) -> SessionRequest:
    """InvalidInput naming the field for anything out of range."""
    limits = body.limits.model_dump(exclude_none=True) if body.limits else {}
    egress = body.egress
    return SessionRequest(
        code=check_code(body.code or ""),
        language=check_language(body.language),
        limits=limits_of(limits, bounds),
        egress=egress_of(egress.mode if egress else None, egress.allow if egress else None),
        bindings=check_bindings(body.serviceBindings),
        webhook_url=body.webhookUrl,
        labels=check_labels(body.labels),
    )


def session_out(session: CodeSession, backend: str) -> SessionOut:
    return SessionOut.model_validate(session_json(session, backend))


def result_out(result: SessionResult) -> SessionResultOut:
    return SessionResultOut.model_validate(result_json(result))


def event_json(event: Event) -> dict[str, Any]:
    """``{ts, type, ...}``: the record's data beside its time and kind."""
    return {**event.data, "ts": ts(event.at), "type": event.kind}


def event_out(event: Event) -> AuditEventOut:
    return AuditEventOut.model_validate(event_json(event))


def frame_json(frame: Frame) -> dict[str, Any]:
    """A stream frame as spec 001 shows it (``audit`` frames carry no ``ts`` of their
    own: the event has it)."""
    data = frame.data
    if frame.kind == "audit":
        return {"kind": "audit", "event": event_json(data["event"])}
    if frame.kind == "result":
        return {"kind": "result", "result": result_json(data["result"]), "ts": ts(frame.ts)}
    if frame.kind in ("phase", "end"):
        return {"kind": frame.kind, "phase": str(data["phase"]), "ts": ts(frame.ts)}
    return {"kind": frame.kind, "chunk": data["chunk"], "ts": ts(frame.ts)}


def sse(frame: Frame) -> bytes:
    """One frame as a server-sent event."""
    return b"event: message\ndata: " + json.dumps(frame_json(frame), separators=(",", ":")).encode() + b"\n\n"
