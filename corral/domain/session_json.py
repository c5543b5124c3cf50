"""The public JSON of a code session and its result (spec 001's ``Session`` and
``SessionResult``, camelCase), defined once: the Enclave surface answers with it and
the webhook sends it. Never a token, a secret or the program.

``Session``: ``id``, ``orgId``, ``createdBy``, ``phase``, ``outcome`` (succeeded,
failed or killed once known; kept after ``torn_down``), ``language``, ``limits`` (the
effective ones), ``egress`` (``{mode, allow}``), ``killReason``, ``error`` (why it
failed or was killed other than by a limit), ``result`` (once it has one), ``backend``,
``labels``, ``serviceBindings`` (names), ``createdAt``, ``startedAt``, ``finishedAt``.

``SessionResult``: ``exitCode`` (128+n for a signal n; null when the process was
lost), ``result`` (the last ``enclave.result`` value, or null), ``stdout``,
``stderr`` (the first MiB of each: ``stdoutTruncated``/``stderrTruncated`` say when
more was printed), ``killReason``, ``durationMs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from corral.domain.sessions import CodeSession, SessionLimits, SessionResult, egress_mode


def ts(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def limits_json(limits: SessionLimits) -> dict[str, Any]:
    return {
        "memoryMiB": limits.memory_mib,
        "wallClockSeconds": limits.wall_clock_s,
        "cpuMillicores": limits.cpu_millicores,
        "cpuSeconds": limits.cpu_seconds,
        "pids": limits.pids,
    }


def result_json(result: SessionResult) -> dict[str, Any]:
    return {
        "exitCode": result.exit_code,
        "result": result.result,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdoutTruncated": result.stdout_truncated,
        "stderrTruncated": result.stderr_truncated,
        "killReason": result.kill_reason.value if result.kill_reason else None,
        "durationMs": result.duration_ms,
    }


def session_json(session: CodeSession, backend: str) -> dict[str, Any]:
    return {
        "id": session.id,
        "orgId": session.org_id,
        "createdBy": session.created_by,
        "phase": session.phase.value,
        "outcome": session.outcome.value if session.outcome else None,
        "language": session.language.value,
        "limits": limits_json(session.limits),
        "egress": {"mode": egress_mode(session.egress), "allow": list(session.egress.allow)},
        "killReason": session.kill_reason.value if session.kill_reason else None,
        "error": session.error,
        "result": result_json(session.result) if session.result else None,
        "backend": backend,
        "labels": dict(session.labels),
        "serviceBindings": list(session.bindings),
        "createdAt": ts(session.created_at),
        "startedAt": ts(session.started_at),
        "finishedAt": ts(session.finished_at),
    }
