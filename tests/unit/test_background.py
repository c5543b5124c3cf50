"""Background (corral.background): stopped last started first, each stop once; a stop
that fails is logged and the others still run; a start that fails leaves nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.background import Background


def noting(done: list[str], what: str) -> Callable[[], None]:
    return lambda: done.append(what)


async def test_stops_run_in_the_reverse_order_of_starts() -> None:
    done: list[str] = []
    background = Background()

    async def stop_b() -> None:
        done.append("stop b")

    async def start_c() -> None:
        done.append("start c")

    await background.start("a", noting(done, "start a"), noting(done, "stop a"))
    background.adopt("b", stop_b)
    await background.start("c", start_c, noting(done, "stop c"))
    assert background.names == ["a", "b", "c"]
    await background.close()
    await background.close()  # each stop once
    assert done == ["start a", "start c", "stop c", "stop b", "stop a"]
    assert background.names == []


async def test_a_failing_stop_is_logged_and_the_others_run(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []
    background = Background()

    def broken() -> None:
        raise RuntimeError("cannot stop")

    background.adopt("first", noting(done, "first"))
    background.adopt("broken part", broken)
    background.adopt("last", noting(done, "last"))
    with caplog.at_level("ERROR", logger="corral.background"):
        await background.close()
    assert done == ["last", "first"]
    assert "stopping broken part failed" in caplog.text


async def test_a_start_that_fails_leaves_nothing_to_stop() -> None:
    done: list[str] = []
    background = Background()

    def failing() -> None:
        raise OSError("no")

    with pytest.raises(OSError):
        await background.start("failing", failing, noting(done, "stopped"))
    await background.close()
    assert background.names == [] and done == []
