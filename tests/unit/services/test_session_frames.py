"""FrameLog: every reader gets every frame from the first, live, and stops after the end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from corral.services.session_frames import FrameLog

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _read(log: FrameLog) -> list[str]:
    return [str(frame.data.get("chunk", frame.kind)) async for frame in log.follow()]


async def test_readers_early_and_late_get_every_frame_and_end() -> None:
    log = FrameLog()
    log.add("stdout", NOW, {"chunk": "a"})
    early = asyncio.create_task(_read(log))
    await asyncio.sleep(0)
    log.add("stdout", NOW, {"chunk": "b"})
    log.add("end", NOW, {})
    log.close()
    log.add("stdout", NOW, {"chunk": "after the end"})
    assert await early == ["a", "b", "end"]
    assert await _read(log) == ["a", "b", "end"]  # after the end: all of it again


async def test_a_live_reader_sees_a_frame_as_it_is_added() -> None:
    log = FrameLog()
    reader = log.follow()
    first = asyncio.create_task(anext(reader))
    await asyncio.sleep(0)
    assert not first.done()
    log.add("stdout", NOW, {"chunk": "now"})
    frame = await asyncio.wait_for(first, 5)
    assert frame.data["chunk"] == "now"
    log.close()
    assert [f async for f in reader] == []
