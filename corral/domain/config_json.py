"""The JSON form of a sandbox's configuration, defined once for every place that keeps
it: the stores' ``egress`` and ``config`` columns and checkpoint.json's ``config``
(format 1, ``runtime/checkpoint_dirs.py``).

Contract: ``config_of(config_json(c)) == c`` and ``egress_from(egress_json(p)) == p``.
The readers trust what they read (it was written by ``config_json``/``egress_json``):
a malformed value fails with an exception, it is not validated field by field.
"""

from __future__ import annotations

from corral.domain import EgressMode, EgressPolicy, Limits, SandboxConfig


def egress_json(policy: EgressPolicy) -> dict[str, object]:
    kept: dict[str, object] = {
        "mode": policy.mode.value,
        "allow": list(policy.allow),
        "deny": list(policy.deny),
    }
    return {**kept, "auditAllowed": True} if policy.audit_allowed else kept


def egress_from(raw: dict[str, object] | None) -> EgressPolicy:
    """The inverse of ``egress_json``; the default policy for None or ``{}``."""
    if not raw:
        return EgressPolicy()
    allow, deny = raw.get("allow") or [], raw.get("deny") or []
    assert isinstance(allow, list) and isinstance(deny, list)
    return EgressPolicy(
        EgressMode(str(raw.get("mode"))),
        tuple(map(str, allow)),
        tuple(map(str, deny)),
        audit_allowed=raw.get("auditAllowed") is True,
    )


def config_json(c: SandboxConfig) -> dict[str, object]:
    """A checkpoint's configuration as kept (the ``config`` column and checkpoint.json)."""
    return {
        "template": c.template,
        "templateDigest": c.template_digest,
        "limits": {
            "cpuCount": c.limits.cpu_count,
            "memoryMB": c.limits.memory_mb,
            "diskMB": c.limits.disk_mb,
            "pids": c.limits.pids,
            **({"cpuSeconds": c.limits.cpu_seconds} if c.limits.cpu_seconds is not None else {}),
        },
        "envs": dict(c.envs),
        "egress": egress_json(c.egress),
        "metadata": dict(c.metadata),
    }


def config_of(raw: dict[str, object]) -> SandboxConfig:
    """The inverse of ``config_json``."""
    limits = raw.get("limits")
    envs, egress, metadata = raw.get("envs"), raw.get("egress"), raw.get("metadata")
    assert isinstance(limits, dict) and isinstance(envs, dict)
    return SandboxConfig(
        template=str(raw["template"]),
        template_digest=str(raw["templateDigest"]),
        limits=Limits(
            int(limits["cpuCount"]),
            int(limits["memoryMB"]),
            int(limits["diskMB"]),
            int(limits["pids"]),
            float(limits["cpuSeconds"]) if limits.get("cpuSeconds") is not None else None,
        ),
        envs={str(k): str(v) for k, v in envs.items()},
        egress=egress_from(egress if isinstance(egress, dict) else None),
        metadata={str(k): str(v) for k, v in (metadata or {}).items()} if isinstance(metadata, dict) else {},
    )
