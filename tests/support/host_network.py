"""The host network of a test's own ``corral serve``, removed once the test is done with it.

A server given a bridge of its own (``CORRAL_NETWORK_BRIDGE``) makes, on the host: the
bridge, a veth per sandbox or ready namespace plugged into it, named network namespaces
``/run/netns/<bridge>-...``, the nftables tables ``inet <bridge>`` and ``bridge <bridge>``
and its state dir (``CORRAL_NETWORK_STATE_DIR``). A stopped server keeps all of it on
purpose (a restart reuses it); a test session must not: every nftables transaction of
any later corral on the host reads every table first, so leftover tables slow it.
``remove_network`` deletes exactly that, and only for the bridge it is given;
``owned_network`` does so when a fixture's block ends, after its last server stopped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

SYS_NET = Path("/sys/class/net")
NETNS_DIR = Path("/run/netns")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,15}")  # a bridge name corral accepts (core.py, network/node.py)


def remove_network(bridge: str, state_dir: Path | str) -> None:
    """Delete what a stopped server leaves of its network ``bridge``: the veths whose
    master is the bridge, the namespaces ``<bridge>-*``, the tables ``inet <bridge>`` and
    ``bridge <bridge>``, the bridge, and ``state_dir``. Idempotent (what is absent is
    fine). Call it only once no server uses the network. AssertionError naming what is
    still there afterwards."""
    if not _NAME.fullmatch(bridge):
        raise ValueError(f"bad bridge name {bridge!r}")
    for port in _listed(SYS_NET / bridge / "brif"):
        _run("ip", "link", "del", port)
    for name in _namespaces(bridge):
        _run("ip", "netns", "del", name)
    for family in ("inet", "bridge"):
        _run("nft", "delete", "table", family, bridge)
    if (SYS_NET / bridge).exists():
        _run("ip", "link", "del", bridge)
    shutil.rmtree(state_dir, ignore_errors=True)
    left = network_leftovers(bridge, state_dir)
    assert not left, f"network {bridge} not removed: {', '.join(left)} still there"


def network_leftovers(bridge: str, state_dir: Path | str) -> list[str]:
    """What exists of the network ``bridge`` on the host (empty: nothing)."""
    left = [f"veth {port}" for port in _listed(SYS_NET / bridge / "brif")]
    left += [f"namespace {name}" for name in _namespaces(bridge)]
    for family in ("inet", "bridge"):
        listed = subprocess.run(
            ["nft", "list", "table", family, bridge], capture_output=True, timeout=30, check=False
        )
        if listed.returncode == 0:
            left.append(f"table {family} {bridge}")
    if (SYS_NET / bridge).exists():
        left.append(f"bridge {bridge}")
    if Path(state_dir).exists():
        left.append(f"state dir {state_dir}")
    return left


@contextmanager
def owned_network(env: Mapping[str, str]) -> Iterator[None]:
    """The network that ``env`` gives its servers (``CORRAL_NETWORK_BRIDGE``,
    ``CORRAL_NETWORK_STATE_DIR``), removed when the block ends, however it ends: wrap
    the template builds and every server on that network in it."""
    try:
        yield
    finally:
        remove_network(env["CORRAL_NETWORK_BRIDGE"], env["CORRAL_NETWORK_STATE_DIR"])


def _namespaces(bridge: str) -> list[str]:
    return [name for name in _listed(NETNS_DIR) if name.startswith(f"{bridge}-")]


def _listed(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir())
    except FileNotFoundError:
        return []


def _run(*argv: str) -> None:
    """``argv``, its failure ignored (something already gone); the caller checks what is left."""
    subprocess.run(list(argv), capture_output=True, timeout=30, check=False)
