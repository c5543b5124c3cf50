"""Host-side framing (corral.agent.wire) and AgentClient against scripted fake
agents that misbehave: every size, type and wait is bounded, errors are translated."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from corral.agent import client as client_module
from corral.agent import wire
from corral.agent.client import AgentClient
from corral.agent.wire import MAX_PAYLOAD, Frame, FrameType, encode_frame
from corral.domain import ExecRequest
from corral.errors import (
    AgentError,
    Conflict,
    CorralError,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
)

# --------------------------------------------------------------------- framing


def reader_of(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_frames_round_trip_and_end_cleanly() -> None:
    reader = reader_of(encode_frame(FrameType.DATA, b"abc") + encode_frame(FrameType.EOF))
    assert await wire.read_frame(reader, 1) == Frame(FrameType.DATA, b"abc")
    assert await wire.read_frame(reader, 1) == Frame(FrameType.EOF, b"")
    assert await wire.read_frame(reader, 1) is None


async def test_oversized_frame_is_refused_without_waiting_for_it() -> None:
    header = bytes((FrameType.STDOUT,)) + (MAX_PAYLOAD + 1).to_bytes(4, "big")
    with pytest.raises(AgentError, match="bytes"):
        await wire.read_frame(reader_of(header, eof=False), 30)


@pytest.mark.parametrize(
    "data",
    [
        b"\x42\x00\x00\x00\x00",  # unknown type
        b"\x01\x00",  # header cut short
        b"\x01\x00\x00\x00\x09abc",  # payload cut short
    ],
)
async def test_malformed_frames_are_agent_errors(data: bytes) -> None:
    with pytest.raises(AgentError):
        await wire.read_frame(reader_of(data), 1)


async def test_read_frame_has_a_deadline() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AgentError, match="nothing"):
        await wire.read_frame(reader_of(b"", eof=False), 0.05)
    assert loop.time() - started < 1


def test_encoding_limits() -> None:
    with pytest.raises(ValueError):
        encode_frame(FrameType.DATA, b"x" * (MAX_PAYLOAD + 1))
    with pytest.raises(InvalidInput):
        wire.encode_json({"op": "exec", "args": ["x" * MAX_PAYLOAD]})
    with pytest.raises(InvalidInput):
        wire.encode_json({"timeout": float("nan")})
    assert json.loads(wire.encode_json({"path": "/caf\u00e9"})) == {"path": "/caf\u00e9"}


@pytest.mark.parametrize("payload", [b"[1, 2]", b"\xff", b"{", b"[" * 100_000 + b"]" * 100_000])
def test_decode_json_wants_one_object(payload: bytes) -> None:
    with pytest.raises(AgentError):
        wire.decode_json(payload)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("not_found", NotFound),
        ("invalid", InvalidInput),
        ("not_dir", InvalidInput),
        ("is_dir", InvalidInput),
        ("exists", Conflict),
        ("not_empty", Conflict),
        ("no_space", InsufficientStorage),
        ("denied", Forbidden),
        ("io", AgentError),
        ("internal", AgentError),
        ("something-new", AgentError),
    ],
)
def test_error_codes_become_corral_errors(code: str, error: type[CorralError]) -> None:
    with pytest.raises(error) as raised:
        wire.raise_for_answer({"ok": False, "code": code, "message": "m" * 5000})
    assert type(raised.value) is error and len(raised.value.message) == wire.MESSAGE_LIMIT


@pytest.mark.parametrize("answer", [{}, {"ok": "yes"}, {"ok": False, "message": "no code"}])
def test_answers_without_ok_or_code_are_agent_errors(answer: dict[str, object]) -> None:
    with pytest.raises(AgentError):
        wire.raise_for_answer(answer)


def test_agent_argv_runs_the_file_as_a_script(tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text("import sys\nprint(sys.argv, __name__)\n")
    argv = wire.agent_argv(sys.executable, str(script), "--listen-fd", "3")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{[str(script), '--listen-fd', '3']} __main__"


# ---------------------------------------------------------------- fake agents

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_agent() -> AsyncIterator[Callable[[Script], Awaitable[AgentClient]]]:
    """Serve a scripted agent on a socket; the script gets each connection after
    its request frame has been read (and stored in ``requests``)."""
    servers: list[asyncio.Server] = []
    directory = Path(tempfile.mkdtemp(prefix="corral-fake-", dir="/tmp"))

    async def serve(script: Script) -> AgentClient:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await wire.read_frame(reader, 5)
                await script(reader, writer)
            except (ConnectionError, AgentError):
                pass
            finally:
                writer.close()

        path = directory / f"fake{len(servers)}.sock"
        servers.append(await asyncio.start_unix_server(handle, path))
        return AgentClient(path, connect_timeout=1, op_timeout=0.3, output_limit=1000)

    yield serve
    for server in servers:
        server.close()
    shutil.rmtree(directory, ignore_errors=True)


def answer(obj: object) -> bytes:
    return encode_frame(FrameType.JSON, json.dumps(obj).encode())


def sends(*chunks: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()

    return script


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # never answers


async def test_unreachable_agent_is_an_agent_error(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="cannot reach"):
        await AgentClient(tmp_path / "nothing.sock").ping()


async def test_silent_agent_times_out(fake_agent: Callable[[Script], Awaitable[AgentClient]]) -> None:
    client = await fake_agent(silent)
    with pytest.raises(AgentError):
        await client.ping()


@pytest.mark.parametrize(
    "reply",
    [
        answer({"ok": True, "version": "1"}),  # no pid
        answer({"ok": True, "version": 1, "pid": 1}),
        encode_frame(FrameType.DATA, b"{}"),  # not an answer frame
        b"",  # closes without answering
        b"\x10\xff\xff\xff\xff",  # 4 GiB frame
    ],
)
async def test_bad_ping_answers(fake_agent: Callable[[Script], Awaitable[AgentClient]], reply: bytes) -> None:
    client = await fake_agent(sends(reply))
    with pytest.raises(AgentError):
        await client.ping()


async def test_exec_output_is_bounded(fake_agent: Callable[[Script], Awaitable[AgentClient]]) -> None:
    flood = encode_frame(FrameType.STDOUT, b"o" * MAX_PAYLOAD) * 3
    done = answer({"ok": True, "exitCode": 0, "timedOut": False})
    client = await fake_agent(sends(flood, encode_frame(FrameType.STDERR, b"e"), done))
    result = await client.exec(ExecRequest("x"))
    assert result.stdout == b"o" * 1000 and result.stderr == b"e" and result.truncated


async def test_exec_timeout_is_a_result(fake_agent: Callable[[Script], Awaitable[AgentClient]]) -> None:
    client = await fake_agent(sends(answer({"ok": True, "exitCode": 137, "timedOut": True})))
    result = await client.exec(ExecRequest("x", timeout_s=1))
    assert result.timed_out and result.exit_code == 124


@pytest.mark.parametrize(
    "reply",
    [
        encode_frame(FrameType.EXIT, b"\0\0\0\0"),
        answer({"ok": True, "exitCode": "0", "timedOut": False}),
        answer({"ok": True, "exitCode": 0}),
    ],
)
async def test_exec_rejects_malformed_answers(
    fake_agent: Callable[[Script], Awaitable[AgentClient]], reply: bytes
) -> None:
    client = await fake_agent(sends(reply))
    with pytest.raises(AgentError):
        await client.exec(ExecRequest("x"))


async def test_exec_waits_no_longer_than_its_timeout_and_grace(
    fake_agent: Callable[[Script], Awaitable[AgentClient]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "EXEC_GRACE", 0.1)
    client = await fake_agent(silent)
    with pytest.raises(AgentError, match="did not end"):
        await client.exec(ExecRequest("x", timeout_s=0.1))


async def test_file_read_errors_mid_stream(fake_agent: Callable[[Script], Awaitable[AgentClient]]) -> None:
    head = answer({"ok": True, "size": 10})
    error = answer({"ok": False, "code": "denied", "message": "gone"})
    client = await fake_agent(sends(head, encode_frame(FrameType.DATA, b"12345"), error))
    received = []
    with pytest.raises(Forbidden):
        async with await client.read_file("/f") as chunks:
            async for chunk in chunks:
                received.append(chunk)
    assert received == [b"12345"]
    cut = await fake_agent(sends(head, encode_frame(FrameType.DATA, b"12345")))
    with pytest.raises(AgentError, match="without EOF"):
        async with await cut.read_file("/f") as chunks:
            _ = [chunk async for chunk in chunks]


async def test_file_read_error_before_first_chunk(
    fake_agent: Callable[[Script], Awaitable[AgentClient]],
) -> None:
    client = await fake_agent(sends(answer({"ok": False, "code": "not_found", "message": "no"})))
    with pytest.raises(NotFound):
        await client.read_file("/missing")


async def test_write_stops_sending_at_an_early_error(
    fake_agent: Callable[[Script], Awaitable[AgentClient]],
) -> None:
    received = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer({"ok": False, "code": "is_dir", "message": "dir"}))
        await writer.drain()
        while (frame := await wire.read_frame(reader, 5)) is not None:
            received.append(frame.type)

    client = await fake_agent(refuse)

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            yield b"x" * 65536
            await asyncio.sleep(0)

    with pytest.raises(InvalidInput):
        await client.write_file("/dir", endless())
    assert len(received) < 1000 and FrameType.EOF not in received


async def test_write_checks_the_written_count(fake_agent: Callable[[Script], Awaitable[AgentClient]]) -> None:
    async def miscount(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (frame := await wire.read_frame(reader, 5)) is not None and frame.type != FrameType.EOF:
            pass
        writer.write(answer({"ok": True, "written": 1}))
        await writer.drain()

    async def three_bytes() -> AsyncIterator[bytes]:
        yield b"abc"

    client = await fake_agent(miscount)
    with pytest.raises(AgentError, match="wrote 1 bytes of 3"):
        await client.write_file("/f", three_bytes())


SESSION = {
    "id": "s",
    "cmd": "sh",
    "args": [],
    "running": True,
    "exitCode": None,
    "startedAt": 1.5,
    "attachedClients": 0,
    "pty": False,
}


@pytest.mark.parametrize(
    "frames",
    [
        [encode_frame(FrameType.EXIT, b"\0\0\0\0")],  # EXIT during the replay
        [encode_frame(FrameType.SCROLLBACK_END), encode_frame(FrameType.EXIT, b"\0\0")],
        [encode_frame(FrameType.SCROLLBACK_END), encode_frame(FrameType.SCROLLBACK_END)],
        [encode_frame(FrameType.DATA, b"x")],
    ],
)
async def test_attach_rejects_out_of_order_frames(
    fake_agent: Callable[[Script], Awaitable[AgentClient]], frames: list[bytes]
) -> None:
    client = await fake_agent(sends(answer({"ok": True, "session": SESSION}), *frames))
    with pytest.raises(AgentError):
        async with client.attach("s") as att:
            _ = [event async for event in att]


async def test_session_objects_are_validated(fake_agent: Callable[[Script], Awaitable[AgentClient]]) -> None:
    good = await fake_agent(sends(answer({"ok": True, "session": SESSION})))
    info = await good.session("s")
    assert info.id == "s" and info.running and info.started_at.timestamp() == 1.5
    for broken in ({**SESSION, "running": 1}, {**SESSION, "args": [1]}, {**SESSION, "startedAt": 1e300}):
        bad = await fake_agent(sends(answer({"ok": True, "session": broken})))
        with pytest.raises(AgentError):
            await bad.session("s")


@pytest.mark.parametrize("ports", [[0], [70000], ["80"], [True], "80"])
async def test_ports_must_be_port_numbers(
    fake_agent: Callable[[Script], Awaitable[AgentClient]], ports: object
) -> None:
    client = await fake_agent(sends(answer({"ok": True, "ports": ports})))
    with pytest.raises(AgentError):
        await client.ports()
