"""The node's bridge (default ``corral0``): every sandbox's veth is a port of it.

:func:`ensure` is idempotent and cheap when all is in place: it creates the bridge if
missing, gives it the pool's gateway address, brings it up, switches IPv6 off on it
and turns on IPv4 forwarding for the host (sandboxes reach the world through NAT).
Decisions:

* The bridge gets a fixed, locally administered MAC derived from its name. A Linux
  bridge without one takes the lowest MAC of its ports, so it would change as
  sandboxes come and go and every sandbox's ARP entry for its gateway would go stale.
* Ports are *isolated* (``bridge_slave isolated on``, set by ``namespace.py``):
  isolated ports cannot exchange frames with each other, only with the bridge itself,
  so sandboxes have no layer-2 path to each other; the firewall closes layer 3.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from pathlib import Path

from corral.errors import RuntimeFailure
from corral.network import command

SYS_NET = Path("/sys/class/net")
PROC_SYS = Path("/proc/sys")


def mac_for(name: str) -> str:
    digest = hashlib.sha256(f"bridge:{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


async def ensure(name: str, gateway: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> None:
    """Make the bridge exist with ``gateway/prefix``, up, IPv6 off; forwarding on.
    RuntimeFailure if it cannot be made so."""
    exists = await asyncio.to_thread((SYS_NET / name).exists)
    lines = [] if exists else [f"link add {name} address {mac_for(name)} type bridge stp_state 0"]
    lines += [f"addr replace {gateway}/{network.prefixlen} dev {name}", f"link set {name} up"]
    await command.run(["ip", "-batch", "-"], stdin="\n".join(lines) + "\n")
    await asyncio.to_thread(_sysctls, name)


def _sysctls(name: str) -> None:
    writes = {
        PROC_SYS / "net/ipv4/ip_forward": "1",
        PROC_SYS / "net/ipv6/conf" / name / "disable_ipv6": "1",
    }
    for path, value in writes.items():
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except FileNotFoundError:
            if "ipv6" not in str(path):  # a kernel without IPv6 has nothing to switch off
                raise RuntimeFailure(f"missing {path}") from None
        except OSError as exc:
            raise RuntimeFailure(f"cannot set {path}: {exc}") from exc


async def ports(name: str) -> set[str]:
    """Names of the bridge's ports (empty if there is no bridge)."""

    def scan() -> set[str]:
        try:
            return {p.name for p in (SYS_NET / name / "brif").iterdir()}
        except FileNotFoundError:
            return set()

    return await asyncio.to_thread(scan)


async def remove(name: str) -> None:
    """Delete the bridge (tests; a node keeps its bridge). Idempotent."""
    if await asyncio.to_thread((SYS_NET / name).exists):
        await command.run(["ip", "link", "del", name])
