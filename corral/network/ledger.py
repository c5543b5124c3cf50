"""What this node's network adapter remembers across a control-plane restart: each
attached sandbox's address, egress policy, namespace, host veth and firewall chain
names (a sandbox that claimed a ready namespace keeps the pool's, see ``spares.py``), the ready
namespaces (tag -> address) and the allocation cursor.

One JSON file, ``<state dir>/network.json``, replaced atomically (temp file + rename)
after every change. A save serialises only the records changed since the last one
(``Records`` notes them; each record's JSON is kept) and writes in a thread, so what a
create or kill costs here does not grow with the sandboxes on the node beyond joining
the kept texts (serialising every record on the event loop cost ~45 ms at 1,000). It needs to survive a restart of ``corral serve``, not a
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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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


class Records(dict[str, Record]):
    """Sandbox id -> record, noting the ids set or removed since ``changed`` was last
    cleared."""

    def __init__(self, items: Mapping[str, Record] | None = None) -> None:
        super().__init__(items or {})
        self.changed: set[str] = set(self)

    def __setitem__(self, key: str, value: Record) -> None:
        super().__setitem__(key, value)
        self.changed.add(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.changed.add(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.changed.add(key)
        return super().pop(key, *default)

    def clear(self) -> None:
        self.changed.update(self)
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[str, Record]:
        key, value = super().popitem()
        self.changed.add(key)
        return key, value


class Ledger:
    """In-memory view plus the file. Mutations are synchronous; :meth:`save` returns
    once a write that started after the call has ended, so the file holds the view as
    it was then or later. Writes are one at a time, and saves that wait meanwhile share
    the next one (a burst of creates writes the file a few times, not once each)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "network.json"
        self._records = Records()
        self._texts: dict[str, str] = {}  # sandbox id -> its record's JSON, as last saved
        self.spares: dict[str, str] = {}  # ready namespace tag -> its address
        self.cursor: str | None = None
        self._lock = asyncio.Lock()
        self._asked = 0  # saves called so far
        self._covered = 0  # saves whose changes the file holds
        self.writes = 0  # files written so far

    @property
    def records(self) -> Records:
        return self._records

    @records.setter
    def records(self, records: Mapping[str, Record]) -> None:
        items = dict(records)
        self._records.clear()  # every id so far changed: removed, or set below
        self._records.update(items)

    async def load(self) -> None:
        self.records, self.spares, self.cursor = await asyncio.to_thread(self._read)

    async def save(self) -> None:
        self._asked += 1
        mine = self._asked
        async with self._lock:
            if self._covered >= mine:
                return  # a write that began after this call took its changes
            covers = self._asked
            records, texts = self._records, self._texts
            for sid in records.changed:
                record = records.get(sid)
                if record is None:
                    texts.pop(sid, None)
                else:
                    texts[sid] = f"{json.dumps(sid)}: {json.dumps(_entry(record))}"
            records.changed.clear()
            head = json.dumps(
                {"version": VERSION, "cursor": self.cursor, "spares": dict(sorted(self.spares.items()))}
            )
            payload = head[:-1] + ', "sandboxes": {\n' + ",\n".join(texts.values()) + "\n}}\n"
            try:
                await asyncio.to_thread(self._write, payload)
            except OSError as exc:
                raise RuntimeFailure(f"cannot write {self.path}: {exc}") from exc
            self._covered = covers
            self.writes += 1

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
