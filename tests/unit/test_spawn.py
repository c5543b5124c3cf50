"""corral.spawn.capture: what a program prints reaches the caller whole."""

from __future__ import annotations

import sys

from corral import spawn

MIB = 1 << 20


async def test_capture_keeps_output_larger_than_a_pipe() -> None:
    # The program's ends of the pipes are blocking: given a non-blocking one, a program
    # stops at the pipe's 64 KiB (nft's JSON of many chains was cut there).
    write = "import sys; sys.stdout.write('o' * (1 << 20)); sys.stderr.write('e' * (1 << 20))"
    code, out, err = await spawn.capture([sys.executable, "-c", write], timeout=60)
    assert (code, out, err) == (0, b"o" * MIB, b"e" * MIB)
