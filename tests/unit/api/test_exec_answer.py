"""The streamed exec answers (corral.api.opencomputer.answer) are byte for byte what
json.dumps writes, whatever the output holds, and say truncated only when it was."""

from __future__ import annotations

import json
import os

import pytest

from corral.api.opencomputer.answer import CHUNK, HeldAnswer, _object, answer, run_fields, status_fields
from corral.domain import ExecResult
from corral.services.commands import AsyncExec

OUTPUTS = [
    b"",
    b"hello\n",
    b'quote " backslash \\ nul \x00 esc \x1b',
    os.urandom(3 * CHUNK + 17),
    "é".encode() * (CHUNK // 2) + b"a" + "😀".encode() * 10,  # characters cut by chunks
    b"a" * (CHUNK - 1) + "😀".encode() + b"\xff\xfe",
]


@pytest.mark.parametrize("output", OUTPUTS)
def test_the_run_answer_is_what_json_dumps_writes(output: bytes) -> None:
    result = ExecResult(3, output, b"err\x00\n")
    body = b"".join(_object(run_fields(result)))
    expected = {"exitCode": 3, "stdout": output.decode("utf-8", "replace"), "stderr": "err\x00\n"}
    assert body == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()


def test_truncated_is_said_only_when_output_was_dropped() -> None:
    kept = json.loads(b"".join(_object(run_fields(ExecResult(0, b"x", b"")))))
    dropped = json.loads(b"".join(_object(run_fields(ExecResult(0, b"x", b"", truncated=True)))))
    assert "truncated" not in kept and dropped["truncated"] is True
    state = AsyncExec("ex-1", "sb-1", False, result=ExecResult(1, b"out", b"", truncated=True))
    status = json.loads(b"".join(_object(status_fields(state))))
    assert status == {
        "execId": "ex-1",
        "running": False,
        "exitCode": 1,
        "stdout": "out",
        "stderr": "",
        "error": None,
        "truncated": True,
    }
    running = json.loads(b"".join(_object(status_fields(AsyncExec("ex-2", "sb-1", True)))))
    assert running == {
        "execId": "ex-2",
        "running": True,
        "exitCode": None,
        "stdout": "",
        "stderr": "",
        "error": None,
    }


def test_an_answer_that_fits_in_one_piece_goes_whole_and_is_released_at_once() -> None:
    released: list[str] = []
    small = answer(run_fields(ExecResult(0, b"out\n", b"")), lambda: released.append("small"))
    assert not isinstance(small, HeldAnswer)
    assert json.loads(small.body) == {"exitCode": 0, "stdout": "out\n", "stderr": ""}
    assert released == ["small"]
    large = answer(run_fields(ExecResult(0, b"x" * (CHUNK + 1), b"")), lambda: released.append("large"))
    assert isinstance(large, HeldAnswer)
    assert released == ["small"]  # held until its body is sent
    large.release()
    assert released == ["small", "large"]
