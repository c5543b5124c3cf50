"""Fixtures of the network tests: the world of ``tests/support/network_world.py`` (once
per session) and a harness of sandboxes in it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corral.domain import EgressPolicy
from corral.network import NodeNetwork, namespace
from corral.ports import NetInfo
from tests.support.clock import FakeClock
from tests.support.conditions import eventually_async
from tests.support.network_world import PEER, World, made_world


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    with made_world() as made:
        yield made


class Inside:
    """A program in a sandbox's namespace that connects and resolves on request."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, netns_path: str) -> Inside:
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={netns_path}", sys.executable, PEER, "agent",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        result: dict[str, Any] = json.loads(line)
        return result

    async def reaches(self, host: str, port: int = 80) -> bool:
        result = await self.call("connect", host=host, port=port)
        return bool(result["ok"])

    async def resolve(self, name: str, server: str, *, tcp: bool = False) -> dict[str, Any]:
        return await self.call("resolve", name=name, server=server, tcp=tcp)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Box:
    id: str
    info: NetInfo
    inside: Inside


@dataclass
class Harness:
    network: NodeNetwork
    world: World
    state_dir: Path
    events: list[tuple[str, dict[str, object]]]  # denials
    allowed: list[tuple[str, dict[str, object]]] = field(default_factory=list)  # audited allowed ones
    insides: list[Inside] = field(default_factory=list)
    clock: FakeClock = field(default_factory=FakeClock)  # times the events' bounds

    def make(self, **kwargs: Any) -> NodeNetwork:
        """Another NodeNetwork on the same world and state (a restarted node)."""

        async def on_denied(sid: str, event: dict[str, object]) -> None:
            self.events.append((sid, event))

        async def on_allowed(sid: str, event: dict[str, object]) -> None:
            self.allowed.append((sid, event))

        options: dict[str, Any] = {
            "pool": self.world.pool,
            "bridge_name": self.world.bridge,
            "upstreams": [f"{self.world.out1}:53"],
            "table": self.world.table,
            "netns_prefix": self.world.prefix,
            "nflog_group": self.world.group,
            "pin_private": True,
            "clock": self.clock.monotonic,
        }
        return NodeNetwork(self.state_dir, on_denied, on_allowed=on_allowed, **(options | kwargs))

    async def box(self, policy: EgressPolicy, sid: str | None = None) -> Box:
        sid = sid or "sb-" + secrets.token_hex(8)
        info = await self.network.attach(sid, policy)
        inside = await Inside.start(info.netns_path)
        self.insides.append(inside)
        return Box(sid, info, inside)

    def host_end(self, sid: str) -> str | None:
        """The bridge port of ``sid``'s veth: named after the id, or a ready
        namespace's port labelled with it."""
        for port in os.listdir(f"/sys/class/net/{self.world.bridge}/brif"):
            if port == namespace.veth_name(sid) or namespace.label_of(port) == sid:
                return port
        return None

    async def ready(self, count: int, network: NodeNetwork | None = None) -> None:
        """Wait (up to 10 s) until ``count`` ready namespaces are there."""
        network = network or self.network
        await network.start()
        await eventually_async(
            lambda: network.status()["ready_namespaces"] == count,
            10,
            lambda: f"ready namespaces: {network.status()['ready_namespaces']}, wanted {count}",
        )

    async def denial(self, sid: str, **match: object) -> dict[str, object]:
        """The first event for ``sid`` whose fields include ``match`` (waits up to 3 s)."""

        def found() -> dict[str, object] | None:
            return next(
                (e for got, e in self.events if got == sid and all(e.get(k) == v for k, v in match.items())),
                None,
            )

        await eventually_async(found, 3, lambda: f"no denial {match} for {sid}; got {self.events}")
        event = found()
        assert event is not None
        return event


@pytest.fixture
async def harness(world: World, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(network=None, world=world, state_dir=tmp_path / "state", events=[])  # type: ignore[arg-type]
    h.network = h.make()
    await h.network.start()
    try:
        yield h
    finally:
        for inside in h.insides:
            await inside.stop()
        try:
            await asyncio.wait_for(h.network.reclaim(set()), 20)
            await asyncio.wait_for(h.network.drain(), 20)
        finally:
            await h.network.close()
