"""Group commit of nftables scripts (corral/network/nftlib.py): scripts that arrive
while a transaction runs go together into the next one; a failing batch is applied
one script at a time, so each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import threading

import pytest

from corral.errors import RuntimeFailure
from corral.network import nftlib


class FakeLibrary:
    """``nftlib._run`` in its thread: records each transaction; the first one waits
    until released; a transaction holding "bad" fails."""

    def __init__(self) -> None:
        self.transactions: list[str] = []
        self.first = threading.Event()
        self.started = threading.Event()

    def run(self, script: str) -> None:
        if not self.transactions:
            self.started.set()
            self.first.wait(10)
        self.transactions.append(script)
        if "bad" in script:
            raise RuntimeFailure("nft: bad")


@pytest.fixture
def library(monkeypatch: pytest.MonkeyPatch) -> FakeLibrary:
    fake = FakeLibrary()
    monkeypatch.setattr(nftlib, "_run", fake.run)
    return fake


async def test_scripts_waiting_behind_a_transaction_share_the_next(library: FakeLibrary) -> None:
    first = asyncio.create_task(nftlib.apply("one\n"))
    await asyncio.to_thread(library.started.wait, 10)
    rest = [asyncio.create_task(nftlib.apply(f"s{n}\n")) for n in range(5)]
    await asyncio.sleep(0)  # they are queued behind the first
    library.first.set()
    await asyncio.gather(first, *rest)
    assert library.transactions == ["one\n", "\n".join(f"s{n}\n" for n in range(5))]


async def test_a_failing_script_fails_alone(library: FakeLibrary) -> None:
    first = asyncio.create_task(nftlib.apply("one\n"))
    await asyncio.to_thread(library.started.wait, 10)
    good = asyncio.create_task(nftlib.apply("good\n"))
    bad = asyncio.create_task(nftlib.apply("bad\n"))
    other = asyncio.create_task(nftlib.apply("other\n"))
    await asyncio.sleep(0)
    library.first.set()
    await asyncio.gather(first, good, other)
    with pytest.raises(RuntimeFailure, match="bad"):
        await bad
    assert library.transactions[1] == "good\n\nbad\n\nother\n"  # together first: failed, nothing applied
    assert library.transactions[2:] == ["good\n", "bad\n", "other\n"]
