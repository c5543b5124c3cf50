"""The NullNetwork fake keeps the port's contract."""

from __future__ import annotations

import pytest

from corral.domain import EgressMode, EgressPolicy
from corral.errors import Conflict, InvalidInput, NotFound
from corral.network import NullNetwork


async def test_null_network_contract() -> None:
    events: list[tuple[str, dict[str, object]]] = []

    async def on_denied(sid: str, event: dict[str, object]) -> None:
        events.append((sid, event))

    net = NullNetwork(on_denied)
    sid = "sb-" + "a" * 16
    info = await net.attach(sid, EgressPolicy(allow=("Example.com",)))
    assert info.address == "127.0.0.1" and info.netns_path == ""
    assert net.policies[sid].allow == ("example.com",)
    with pytest.raises(Conflict):
        await net.attach(sid, EgressPolicy())
    with pytest.raises(InvalidInput):
        await net.attach("../x", EgressPolicy())
    with pytest.raises(InvalidInput):
        await net.set_policy(sid, EgressPolicy(allow=("bad entry",)))
    await net.set_policy(sid, EgressPolicy(mode=EgressMode.DENY_ALL))
    await net.deny(sid, {"dst": "1.2.3.4"})
    assert events == [(sid, {"dst": "1.2.3.4"})]
    assert await net.info(sid) == info
    assert await net.reclaim({sid}) == []
    assert await net.reclaim(set()) == [sid]
    await net.detach(sid)
    assert await net.info(sid) is None
    with pytest.raises(NotFound):
        await net.set_policy(sid, EgressPolicy())
