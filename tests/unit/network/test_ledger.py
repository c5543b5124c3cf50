"""The network ledger (corral/network/ledger.py): a save serialises only the records
changed since the last one, and the file reads back as the whole view."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.domain import EgressMode, EgressPolicy
from corral.network import ledger as module
from corral.network.ledger import Ledger, Record


async def test_a_save_serialises_only_what_changed_and_reads_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = Ledger(tmp_path)
    for n in range(300):
        saved.records[f"sb-{n:08d}"] = Record(f"10.9.{n // 200}.{n % 200 + 2}", EgressPolicy())
    saved.spares["abcdefabcdef"] = "10.9.9.9"
    saved.cursor = "10.9.1.101"
    await saved.save()

    serialised: list[Record] = []
    real = module._entry

    def counted(record: Record) -> dict[str, object]:
        serialised.append(record)
        return real(record)

    monkeypatch.setattr(module, "_entry", counted)
    denied = Record("10.9.5.5", EgressPolicy(mode=EgressMode.DENY_ALL), "ns", "veth", "chain")
    saved.records["sb-00000007"] = denied
    saved.records.pop("sb-00000008")
    await saved.save()
    assert serialised == [denied]  # one record, not 300

    loaded = Ledger(tmp_path)
    await loaded.load()
    assert loaded.records == {sid: rec for sid, rec in saved.records.items()}
    assert "sb-00000008" not in loaded.records and loaded.records["sb-00000007"] == denied
    assert (loaded.spares, loaded.cursor) == ({"abcdefabcdef": "10.9.9.9"}, "10.9.1.101")
    loaded.records = {}  # replaced whole (recovery does): every old id is written away
    await loaded.save()
    again = Ledger(tmp_path)
    await again.load()
    assert again.records == {}


async def test_saves_that_wait_share_the_next_write_and_each_sees_its_change(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.records["sb-first000"] = Record("10.9.0.2", EgressPolicy())
    first = asyncio.ensure_future(ledger.save())
    await asyncio.sleep(0)  # the first write is under way
    waiting = []
    for n in range(10):
        ledger.records[f"sb-{n:08d}"] = Record(f"10.9.1.{n + 2}", EgressPolicy())
        waiting.append(asyncio.ensure_future(ledger.save()))
    await asyncio.gather(first, *waiting)
    assert ledger.writes == 2  # the first, then one for the ten that waited
    loaded = Ledger(tmp_path)
    await loaded.load()
    assert set(loaded.records) == {"sb-first000", *(f"sb-{n:08d}" for n in range(10))}
    ledger.records.pop("sb-00000003")
    await ledger.save()  # a save after those writes writes again
    assert ledger.writes == 3
    await loaded.load()
    assert "sb-00000003" not in loaded.records
