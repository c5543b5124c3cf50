"""What this node's network adapter remembers across a control-plane restart: each
attached sandbox's address, egress policy, namespace, host veth and firewall chain
names (a sandbox that claimed a ready namespace keeps the pool's, see ``spares.py``), the ready
namespaces (tag -> address) and the allocation cursor.

One small JSON file, ``<state dir>/network.json``, replaced atomically (temp file +
rename) after every change. It needs to survive a restart of ``corral serve``, not a
reboot: the kernel objects it describes (network namespaces, veths, nftables rules)
do not survive a reboot either, so a state dir on a tmpfs (``/run/corral/network``)
is the natural place, and no fsync is needed. A missing file is an empty ledger; an
unreadable one is moved aside (``network.json.bad``) and the node rebuilds what it
can from the kernel (see ``node.py``). Version 1 files (no names, no spares) are
read as sandboxes with the default names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from corral.domain import EgressPolicy
from corral.domain.egress import policy_from_mapping, policy_to_mapping
from corral.errors import CorralError, RuntimeFailure

log = logging.getLogger("corral.network")
VERSION = 2


@dataclass(frozen=True)
class Record:
    """One attached sandbox. ``netns``/``veth``/``chain`` None: the default names for
    its id."""

    address: str
    policy: EgressPolicy
    netns: str | None = None
    veth: str | None = None
    chain: str | None = None


class Ledger:
    """In-memory view plus the file. Mutations are synchronous; :meth:`save` writes
    the view as it is when the write starts (saves are serialised, so the file always
    ends up with the latest view)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "network.json"
        self.records: dict[str, Record] = {}
        self.spares: dict[str, str] = {}  # ready namespace tag -> its address
        self.cursor: str | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        self.records, self.spares, self.cursor = await asyncio.to_thread(self._read)

    async def save(self) -> None:
        async with self._lock:
            payload = json.dumps(
                {
                    "version": VERSION,
                    "cursor": self.cursor,
                    "sandboxes": {sid: _entry(rec) for sid, rec in sorted(self.records.items())},
                    "spares": dict(sorted(self.spares.items())),
                },
                indent=1,
            )
            try:
                await asyncio.to_thread(self._write, payload)
            except OSError as exc:
                raise RuntimeFailure(f"cannot write {self.path}: {exc}") from exc

    def _read(self) -> tuple[dict[str, Record], dict[str, str], str | None]:
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("version") not in (1, VERSION):
                raise ValueError("unknown format")
            records = {
                str(sid): Record(
                    address=str(entry["address"]),
                    policy=_policy(entry["policy"]),
                    netns=_name(entry.get("netns")),
                    veth=_name(entry.get("veth")),
                    chain=_name(entry.get("chain")),
                )
                for sid, entry in dict(data["sandboxes"]).items()
            }
            spares = {str(tag): str(address) for tag, address in dict(data.get("spares") or {}).items()}
            cursor = data.get("cursor")
            return records, spares, str(cursor) if cursor else None
        except FileNotFoundError:
            return {}, {}, None
        except (OSError, ValueError, KeyError, TypeError, CorralError) as exc:
            log.warning("network ledger %s is unreadable (%s); moved aside", self.path, exc)
            try:
                os.replace(self.path, self.path.with_suffix(".json.bad"))
            except OSError:
                pass
            return {}, {}, None

    def _write(self, payload: str) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(payload)
        os.replace(tmp, self.path)


def _policy(raw: dict[str, object]) -> EgressPolicy:
    """A policy as ``_entry`` wrote it, validated again (the file may be old or damaged)."""
    fields = dict(raw)
    audit_allowed = fields.pop("auditAllowed", False) is True
    return replace(policy_from_mapping(fields), audit_allowed=audit_allowed)


def _entry(record: Record) -> dict[str, object]:
    policy = policy_to_mapping(record.policy) | (
        {"auditAllowed": True} if record.policy.audit_allowed else {}
    )
    entry: dict[str, object] = {"address": record.address, "policy": policy}
    if record.netns is not None and record.veth is not None:
        entry.update(netns=record.netns, veth=record.veth)
    if record.chain is not None:
        entry.update(chain=record.chain)
    return entry


def _name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"bad interface or namespace name {value!r}")
    return value
