"""A small world for the network tests (root; real namespaces, veths, nftables).

Everything has a per-run tag in its name (bridge ``crlt<tag>``, nftables tables
``corral_t<tag>``, sandbox namespaces ``crlt<tag>-sb-...``), so a corral server or
another run on the same machine is never touched. The world (``made_world``; a test session makes it once per fixture):

* ``out1``: a namespace with a veth to the host (host ``198.18.<n>.1/30``, inside
  ``.2``) running a TCP/HTTP server on ``.2:80``, a UDP echo on ``.2:7`` and a DNS server on ``.2:53`` (the
  resolver's upstream): ``allowed.test`` and ``alias.test`` (CNAME to
  ``allowed.test``) -> ``.2``; ``other.test``, ``a.wild.test``, ``wild.test``,
  ``bad.wild.test`` -> ``.6``;
* ``out2``: a second one (host ``.5``, inside ``.6``) with a server on ``.6:80`` and
  on ``169.254.169.254:80`` (the host routes that address to it, so a broken rule
  would reach this namespace, never a real metadata service);
* a TCP server in this process on every host address (``0.0.0.0``);
* a port published on a host address: ``198.18.<n>.5:8081`` is DNATed to ``.2:80``.

Traffic goes only to loopback and to these namespaces. All of it is removed at the
end of the session, even after failures.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PEER = str(Path(__file__).parents[1] / "integration" / "network" / "peer.py")


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)


@dataclass
class World:
    tag: str
    bridge: str
    table: str
    prefix: str
    pool: str
    group: int
    net: str  # 198.18.<n>
    host_port: int
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def out1(self) -> str:
        return f"{self.net}.2"

    @property
    def out2(self) -> str:
        return f"{self.net}.6"


def _serve(netns: str, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, PEER, "serve", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    stdout = proc.stdout
    assert stdout is not None
    ready = threading.Event()

    def wait_ready() -> None:
        stdout.readline()
        ready.set()

    threading.Thread(target=wait_ready, daemon=True).start()
    if not ready.wait(10):
        proc.kill()
        raise RuntimeError(f"server in {netns} did not start")
    return proc


def _host_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("0.0.0.0", 0))

    def run() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhost\n")
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return server, server.getsockname()[1]


@contextlib.contextmanager
def made_world() -> Iterator[World]:
    """The world (see the module docstring), removed when the block ends; skips the test
    without root, ip or nft."""
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root, ip and nft")
    tag = secrets.token_hex(2)
    n = secrets.randbelow(200) + 20
    host_server, host_port = _host_server()
    w = World(
        tag=tag,
        bridge=f"crlt{tag}",
        table=f"corral_t{tag}",
        prefix=f"crlt{tag}-",
        pool=f"10.254.{n}.0/24",
        group=20000 + secrets.randbelow(10000),
        net=f"198.18.{n}",
        host_port=host_port,
    )
    outs = [(f"crlo{tag}1", f"clo{tag}1", 1), (f"crlo{tag}2", f"clo{tag}2", 5)]
    try:
        for netns, veth, low in outs:
            _ip("netns", "add", netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("addr", "add", f"{w.net}.{low}/30", "dev", veth)
            _ip("link", "set", veth, "up")
            _ip("-n", netns, "addr", "add", f"{w.net}.{low + 1}/30", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "route", "add", "default", "via", f"{w.net}.{low}")
        _ip("-n", outs[1][0], "addr", "add", "169.254.169.254/32", "dev", "lo")
        _ip("route", "replace", "169.254.169.254/32", "via", w.out2)  # survives a leaked one
        # a port published on a host address, the way container engines do it
        subprocess.run(
            ["nft", "-f", "-"],
            input=(
                f"add table ip {w.table}_dnat\n"
                f"add chain ip {w.table}_dnat pre {{ type nat hook prerouting priority dstnat; }}\n"
                f"add rule ip {w.table}_dnat pre ip daddr {w.net}.5 tcp dport 8081 dnat to {w.out1}:80\n"
            ),
            text=True,
            check=True,
            timeout=10,
        )
        zone = {"allowed.test": w.out1, "other.test": w.out2, "a.wild.test": w.out2}
        zone |= {"wild.test": w.out2, "bad.wild.test": w.out2}
        records = [arg for name, ip in zone.items() for arg in ("--record", f"{name}={ip}")]
        w.servers.append(
            _serve(
                outs[0][0],
                *("--name", "out1", "--tcp", f"{w.out1}:80", "--dns", f"{w.out1}:53"),
                *("--udp-echo", f"{w.out1}:7"),
                *records,
                *("--cname", "alias.test=allowed.test"),
            )
        )
        w.servers.append(
            _serve(outs[1][0], "--name", "out2", "--tcp", f"{w.out2}:80", "--tcp", "169.254.169.254:80")
        )
        yield w
    finally:
        for proc in w.servers:
            proc.kill()
            proc.wait(5)
        host_server.close()
        _ip("route", "del", "169.254.169.254/32", "via", w.out2, check=False)
        for netns, veth, _ in outs:
            _ip("link", "del", veth, check=False)
            _ip("netns", "del", netns, check=False)
        for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
            if name.startswith(w.prefix):
                _ip("netns", "del", name, check=False)
        for family, table in (("inet", w.table), ("bridge", w.table), ("ip", f"{w.table}_dnat")):
            subprocess.run(
                ["nft", "delete", "table", family, table], check=False, capture_output=True, timeout=10
            )
        _ip("link", "del", w.bridge, check=False)
