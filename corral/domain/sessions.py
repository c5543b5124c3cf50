"""Code sessions (the Enclave surface, spec 001): one program run once in a fresh,
locked-down sandbox, then torn down. Records and their validation; no I/O.

Phases, in order: ``pending`` (waiting for a slot of the admission queue) ->
``running`` -> exactly one outcome, ``succeeded`` (exit 0), ``failed`` (any other
exit, or corral could not run it: ``error`` says why) or ``killed`` (a limit:
``kill_reason``; or a delete: ``error``) -> ``torn_down`` (its sandbox and every
per-session object reclaimed). A torn-down session keeps its outcome in ``outcome``.

``limits_of`` and ``request_of`` validate what a client sent: InvalidInput naming the
field (``limits.memoryMiB``, ``egress.allow[0]``, ``labels``...).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from corral.domain import EgressMode, EgressPolicy
from corral.domain.egress import parse_policy
from corral.errors import InvalidInput

MAX_CODE = 1 << 20  # bytes of a program
MAX_LABELS = 64
MAX_BINDINGS = 16
OUTPUT_KEPT = 1 << 20  # bytes of stdout, and of stderr, a session keeps (the rest is dropped)
RESULT_KEPT = 1 << 20  # bytes of the JSON a program passes to enclave.result


class Phase(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    TORN_DOWN = "torn_down"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.KILLED, Phase.TORN_DOWN)


class KillReason(enum.StrEnum):
    CPU = "cpu_exceeded"
    MEMORY = "memory_exceeded"
    WALL_CLOCK = "wall_clock_exceeded"
    PIDS = "pids_exceeded"


class Language(enum.StrEnum):
    PYTHON = "python"
    NODE = "node"


@dataclass(frozen=True)
class LimitBounds:
    """What a session may ask for (from the settings)."""

    max_memory_mib: int = 2048
    max_cpus: int = 4
    max_pids: int = 512
    max_wall_clock_s: int = 3600
    default_memory_mib: int = 256
    default_wall_clock_s: int = 30
    default_pids: int = 128


@dataclass(frozen=True)
class SessionLimits:
    """Effective limits: memory (memory+swap of the sandbox's cgroup), wall clock (corral's
    own deadline), CPU (``cpu_millicores``: the cgroup's CPU bandwidth, in whole CPUs
    rounded up; ``cpu_seconds``: CPU time the workload may use in all), pids (the
    sandbox's pids controller)."""

    memory_mib: int
    wall_clock_s: int
    cpu_millicores: int
    cpu_seconds: float
    pids: int

    @property
    def cpus(self) -> int:
        return max(1, math.ceil(self.cpu_millicores / 1000))


@dataclass(frozen=True)
class SessionRequest:
    """A valid create request."""

    code: str
    language: Language
    limits: SessionLimits
    egress: EgressPolicy
    bindings: tuple[str, ...] = ()
    webhook_url: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionResult:
    """What a run produced. ``result`` is the JSON value of the last ``enclave.result``
    (None when never called); ``stdout``/``stderr`` the first ``OUTPUT_KEPT`` bytes of
    each (decoded as UTF-8, bad bytes replaced), ``*_truncated`` when more was printed."""

    exit_code: int | None
    result: Any
    stdout: str
    stderr: str
    kill_reason: KillReason | None
    duration_ms: int
    stdout_truncated: bool = False
    stderr_truncated: bool = False


@dataclass(frozen=True)
class CodeSession:
    """A session as the store knows it (never its code, never a secret)."""

    id: str
    org_id: str
    created_by: str
    phase: Phase
    language: Language
    limits: SessionLimits
    egress: EgressPolicy
    created_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    bindings: tuple[str, ...] = ()
    webhook_url: str | None = None
    sandbox_id: str | None = None
    outcome: Phase | None = None  # succeeded | failed | killed, once known
    kill_reason: KillReason | None = None
    error: str | None = None
    result: SessionResult | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Frame:
    """One frame of a session's stream: ``kind`` is phase, stdout, stderr, audit, result
    or end; ``data`` its fields but ``ts`` (phase/end: ``phase``; stdout/stderr:
    ``chunk``; audit: ``event``; result: ``result``)."""

    kind: str
    ts: datetime
    data: Mapping[str, Any]


def limits_of(raw: Mapping[str, Any], bounds: LimitBounds) -> SessionLimits:
    """The effective limits of a request's ``limits`` (defaults filled); InvalidInput
    naming ``limits.<name>``. ``cpus`` is accepted for ``cpuMillicores`` (x1000)."""
    known = {"memoryMiB", "wallClockSeconds", "cpuMillicores", "cpus", "cpuSeconds", "pids"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidInput(f"limits: unknown limit {unknown[0]!r}", field=f"limits.{unknown[0]}")
    memory = _int(raw, "memoryMiB", 64, bounds.max_memory_mib, bounds.default_memory_mib)
    wall = _int(raw, "wallClockSeconds", 1, bounds.max_wall_clock_s, bounds.default_wall_clock_s)
    pids = _int(raw, "pids", 16, bounds.max_pids, bounds.default_pids)
    if "cpus" in raw and "cpuMillicores" in raw:
        raise InvalidInput("give cpuMillicores or cpus, not both", field="limits.cpus")
    if "cpus" in raw:
        millicores = round(_number(raw, "cpus", 0.1, bounds.max_cpus, 1) * 1000)
    else:
        millicores = _int(raw, "cpuMillicores", 100, bounds.max_cpus * 1000, 1000)
    ceiling = float(wall * max(1, math.ceil(millicores / 1000)))
    cpu_seconds = _number(raw, "cpuSeconds", 0.1, ceiling, ceiling)
    return SessionLimits(memory, wall, millicores, cpu_seconds, pids)


def egress_of(mode: str | None, allow: list[str] | None) -> EgressPolicy:
    """``deny_all`` (the default; an ``allow`` list must then be empty) or ``allowlist``
    (CIDRs and hostnames, as corral's egress policies take them). The host, other
    sandboxes and link-local addresses (the metadata address) stay denied either way.
    A session's connections are audited both ways (``audit_allowed``): denied ones as
    ``egress_denied``, the new ones let through as ``egress_allowed``."""
    if mode in (None, "deny_all"):
        if allow:
            raise InvalidInput("egress.allow must be empty in deny_all mode", field="egress.allow")
        return EgressPolicy(EgressMode.DENY_ALL, audit_allowed=True)
    if mode != "allowlist":
        raise InvalidInput("egress.mode must be deny_all or allowlist", field="egress.mode")
    return replace(parse_policy(EgressMode.DENY_ALL, allow or [], field="egress"), audit_allowed=True)


def egress_mode(policy: EgressPolicy) -> str:
    """The Enclave name of a session's policy: ``allowlist`` when it allows anything."""
    return "allowlist" if policy.allow else "deny_all"


def check_code(code: str) -> str:
    if not code.strip():
        raise InvalidInput("code must be a non-empty program", field="code")
    if len(code.encode()) > MAX_CODE or "\0" in code:
        raise InvalidInput(f"code must be at most {MAX_CODE} bytes, without NUL", field="code")
    return code


def check_language(language: str | None) -> Language:
    try:
        return Language(language or "python")
    except ValueError as exc:
        raise InvalidInput("language must be python or node", field="language") from exc


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"labels: at most {MAX_LABELS}", field="labels")
    for key, value in labels.items():
        if not 0 < len(key) <= 128 or len(value) > 1024:
            raise InvalidInput(f"labels: key or value too long: {key[:32]!r}", field="labels")
    return dict(labels)


def check_bindings(names: list[str]) -> tuple[str, ...]:
    if len(names) > MAX_BINDINGS:
        raise InvalidInput(f"serviceBindings: at most {MAX_BINDINGS}", field="serviceBindings")
    return tuple(dict.fromkeys(names))


def _int(raw: Mapping[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"limits.{name} must be an integer", field=f"limits.{name}")
    if not low <= value <= high:
        raise InvalidInput(f"limits.{name} must be between {low} and {high}", field=f"limits.{name}")
    return value


def _number(raw: Mapping[str, Any], name: str, low: float, high: float, default: float) -> float:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"limits.{name} must be a number", field=f"limits.{name}")
    if not low <= value <= high:
        raise InvalidInput(f"limits.{name} must be between {low:g} and {high:g}", field=f"limits.{name}")
    return float(value)
