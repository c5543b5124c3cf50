"""Egress policies: parsing, validation, normalisation (domain logic: the API, the
store and the network adapter all read policies through here; no I/O).

An entry of ``allow`` or ``deny`` is one of

* a CIDR or a bare address (``10.0.0.0/8``, ``203.0.113.7``): host bits are cleared,
  a bare address is a /32 (/128). IPv6 entries are accepted and kept, but a sandbox
  has no IPv6 egress at all, so they never open anything;
* a hostname (``pypi.org``): matched exactly, case-insensitively, trailing dot
  ignored, non-ASCII names IDNA-encoded;
* a wildcard ``*.example.com``: every name *below* ``example.com`` at any depth, not
  ``example.com`` itself (list both to allow both); a bare ``*`` matches every name.

``deny`` wins over ``allow``. Validation raises InvalidInput naming the field, the
index and the bad entry (``egress.allow[2]: 'exa mple.com' is not a CIDR, hostname or
*.domain``); an unknown mode names ``egress.mode``. At most :data:`MAX_ENTRIES`
entries per list. :func:`validate_policy` is idempotent and returns the normalised
policy (what the store should keep and the API should echo).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from corral.domain import EgressMode, EgressPolicy
from corral.errors import InvalidInput

MAX_ENTRIES = 256
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_LOOKS_NUMERIC = re.compile(r"^[0-9./]+$")


def parse_policy(
    mode: str | EgressMode | None = None,
    allow: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
    *,
    field: str = "egress",
) -> EgressPolicy:
    """Build a normalised policy from loose input (an API body's fields). ``mode``
    defaults to allow_all when nothing else is given, and to deny_all when only an
    allow list is given (an allow list means nothing under allow_all)."""
    allow_list = _as_list(allow, f"{field}.allow")
    deny_list = _as_list(deny, f"{field}.deny")
    if mode is None or mode == "":
        mode = EgressMode.DENY_ALL if allow_list else EgressMode.ALLOW_ALL
    return validate_policy(
        EgressPolicy(mode=_mode(mode, f"{field}.mode"), allow=tuple(allow_list), deny=tuple(deny_list)),
        field=field,
    )


def validate_policy(policy: EgressPolicy, *, field: str = "egress") -> EgressPolicy:
    """The normalised policy; InvalidInput naming the first bad entry."""
    mode = _mode(policy.mode, f"{field}.mode")
    allow = _normalise(policy.allow, f"{field}.allow")
    deny = _normalise(policy.deny, f"{field}.deny")
    return EgressPolicy(mode=mode, allow=allow, deny=deny, audit_allowed=policy.audit_allowed)


def policy_from_mapping(data: Mapping[str, Any], *, field: str = "egress") -> EgressPolicy:
    """Parse ``{"mode": ..., "allow": [...], "deny": [...]}`` (API bodies, the ledger)."""
    unknown = set(data) - {"mode", "allow", "deny"}
    if unknown:
        raise InvalidInput(f"{field}: unknown field {min(unknown)!r}", field=field)
    return parse_policy(data.get("mode"), data.get("allow"), data.get("deny"), field=field)


def policy_to_mapping(policy: EgressPolicy) -> dict[str, Any]:
    return {"mode": str(policy.mode), "allow": list(policy.allow), "deny": list(policy.deny)}


def _as_list(entries: Iterable[str] | None, field: str) -> list[str]:
    if entries is None:
        return []
    if isinstance(entries, str | bytes):
        raise InvalidInput(f"{field} must be a list of strings", field=field)
    return list(entries)


def _mode(mode: object, field: str) -> EgressMode:
    if isinstance(mode, EgressMode):
        return mode
    try:
        return EgressMode(str(mode).strip().lower() if isinstance(mode, str) else "")
    except ValueError:
        allowed = ", ".join(m.value for m in EgressMode)
        raise InvalidInput(f"{field}: unknown mode {mode!r} (one of {allowed})", field=field) from None


def _normalise(entries: Iterable[object], field: str) -> tuple[str, ...]:
    out: list[str] = []
    for index, entry in enumerate(entries):
        if index >= MAX_ENTRIES:
            raise InvalidInput(f"{field}: at most {MAX_ENTRIES} entries", field=field)
        if not isinstance(entry, str):
            raise InvalidInput(f"{field}[{index}]: {entry!r} is not a string", field=field)
        value = normalise_entry(entry, f"{field}[{index}]")
        if value not in out:
            out.append(value)
    return tuple(out)


def normalise_entry(entry: str, where: str) -> str:
    """One entry in canonical form: a network (``a.b.c.d/n``), a hostname, ``*.name``
    or ``*``. InvalidInput (naming ``where`` and the entry) otherwise."""
    field = where.split("[", 1)[0]
    text = entry.strip()
    if not text:
        raise InvalidInput(f"{where}: empty entry", field=field)
    if ":" in text or _LOOKS_NUMERIC.match(text):
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise InvalidInput(f"{where}: {entry!r} is not a valid CIDR or address", field=field) from None
    if text == "*":
        return text
    wildcard = text.startswith("*.")
    name = hostname(text[2:] if wildcard else text)
    if name is None:
        raise InvalidInput(f"{where}: {entry!r} is not a CIDR, hostname or *.domain", field=field)
    return f"*.{name}" if wildcard else name


def hostname(text: str) -> str | None:
    """``text`` as a canonical lower-case ASCII hostname, or None if it is not one."""
    name = text.strip().rstrip(".").lower()
    if not name:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        return None
    return name
