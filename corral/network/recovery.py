"""What a starting node finds in the kernel beyond its ledger; ``node.py`` acts on it.

Inspection only: nothing here changes a kernel object or the ledger.

* :func:`with_names`: the records of a version 1 ledger get the default names
  (namespace ``<prefix><id>``, host end ``namespace.veth_name(id)``, chain ``<id>``).
* :func:`lost_sandboxes`: sandboxes the ledger does not list but the kernel shows (a
  binding keyed by the id in the firewall's verdict map, a namespace
  named after the id, or a pool-named namespace whose host end is labelled with the
  id), as records with a deny_all policy (fail closed: their real policy is unknown).
* :func:`intact_spares`: which of the ledger's ready namespaces can be handed out
  again: the namespace and its host end exist, no sandbox labelled it, no sandbox holds
  its address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from corral import ids
from corral.domain import EgressMode, EgressPolicy
from corral.network import namespace, spares
from corral.network.ledger import Record
from corral.network.spares import Spare


def with_names(records: dict[str, Record], prefix: str) -> dict[str, Record]:
    named = {}
    for sid, record in records.items():
        if record.netns is None or record.veth is None:
            record = replace(record, netns=prefix + sid, veth=namespace.veth_name(sid))
        named[sid] = record if record.chain is not None else replace(record, chain=sid)
    return named


async def lost_sandboxes(
    prefix: str, records: dict[str, Record], found: dict[str, str], contains: Callable[[str], bool]
) -> dict[str, Record]:
    """Sandboxes missing from ``records`` (which must have names), from the namespaces
    under ``prefix`` and ``found`` (the firewall's chain -> address); only addresses
    for which ``contains`` is true."""
    listed = {record.netns for record in records.values()}
    lost: dict[str, Record] = {}
    fail_closed = EgressPolicy(mode=EgressMode.DENY_ALL)
    for name in sorted(await namespace.names(prefix)):
        if name in listed:
            continue
        tag = spares.tag_of_netns(prefix, name)
        if tag is not None:
            veth, chain = spares.names(prefix, tag)[1], spares.chain(tag)
            sid = await asyncio.to_thread(namespace.label_of, veth) or ""
        else:
            sid = chain = name[len(prefix) :]
            veth = namespace.veth_name(sid)
        if not ids.is_valid(sid, "sb") or sid in records:
            continue
        address = found.get(chain) or await namespace.address_of(name)
        if address is not None and contains(address):
            lost[sid] = Record(address, fail_closed, name, veth, chain)
    for sid, address in found.items():
        if ids.is_valid(sid, "sb") and sid not in records and sid not in lost and contains(address):
            lost[sid] = Record(address, fail_closed, prefix + sid, namespace.veth_name(sid), sid)
    return lost


async def intact_spares(
    prefix: str, ledger: dict[str, str], held: set[str], contains: Callable[[str], bool]
) -> tuple[list[Spare], list[str]]:
    """(spares to hand out again, tags to drop from the ledger) of ``ledger``'s ready
    namespaces (tag -> address), ``held`` being the addresses sandboxes hold."""
    ready, dropped = [], []
    for tag, address in ledger.items():
        netns, veth = spares.names(prefix, tag)
        if address not in held and contains(address) and await asyncio.to_thread(_unclaimed, netns, veth):
            ready.append(Spare(tag, address, netns, veth))
        else:
            dropped.append(tag)
    return ready, dropped


def _unclaimed(netns: str, veth: str) -> bool:
    return namespace.exists(netns) and namespace.link_exists(veth) and namespace.label_of(veth) is None
