"""The xgen connection's Outbox: bounded, in order, skippable frames skipped."""

from __future__ import annotations

import asyncio

from corral.api.xgen.outbox import Outbox


class SlowSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gate = asyncio.Event()

    async def send_bytes(self, data: bytes) -> None:
        await self.gate.wait()
        self.sent.append(data)


async def test_a_client_that_does_not_read_stops_the_producers() -> None:
    socket = SlowSocket()
    outbox = Outbox(socket, limit=100)  # type: ignore[arg-type]
    writer = asyncio.create_task(outbox.run())
    await outbox.put(b"a" * 60)
    producer = asyncio.create_task(outbox.put(b"b" * 60))  # would pass the limit: waits
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not producer.done()
    assert outbox.offer(b"stats" * 10) is False  # skippable: skipped while full
    socket.gate.set()
    await asyncio.wait_for(producer, 1)
    await outbox.put(b"c")
    while len(socket.sent) < 3:
        await asyncio.sleep(0)
    assert socket.sent == [b"a" * 60, b"b" * 60, b"c"]
    writer.cancel()


async def test_a_frame_larger_than_the_limit_goes_alone() -> None:
    socket = SlowSocket()
    socket.gate.set()
    outbox = Outbox(socket, limit=10)  # type: ignore[arg-type]
    writer = asyncio.create_task(outbox.run())
    await asyncio.wait_for(outbox.put(b"x" * 1000), 1)
    while not socket.sent:
        await asyncio.sleep(0)
    assert socket.sent == [b"x" * 1000]
    writer.cancel()
