"""The real agent (corral/agent/sandbox_agent.py) as a local process, driven through
AgentClient or raw frames: exec, sessions, PTYs, files, ports, hostile input, exit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.agent.client import AgentClient
from corral.agent.wire import FrameType, encode_frame
from corral.domain import ExecRequest, PtySize, SessionEvent, SessionSpec, Stream
from corral.errors import AgentError, Conflict, InvalidInput, NotFound
from tests.support.agent import RunningAgent, running_agent
from tests.support.conditions import eventually_async, pid_gone

# ---------------------------------------------------------------------- harness


@pytest.fixture
def agent() -> Iterator[RunningAgent]:
    with running_agent() as running:
        yield running


@pytest.fixture
def client(agent: RunningAgent) -> AgentClient:
    return agent.client()


async def raw_exchange(sock: Path, data: bytes, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """Send raw bytes, read until the agent closes, split what came into frames."""
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            received = await reader.read()
    finally:
        writer.close()
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 5 <= len(received):
        size = int.from_bytes(received[pos + 1 : pos + 5], "big")
        frames.append((received[pos], received[pos + 5 : pos + 5 + size]))
        pos += 5 + size
    return frames


def json_frame(obj: object) -> bytes:
    return encode_frame(FrameType.JSON, json.dumps(obj).encode())


def error_code(frames: list[tuple[int, bytes]]) -> str:
    assert frames and frames[-1][0] == FrameType.JSON, frames
    answer = json.loads(frames[-1][1])
    assert answer["ok"] is False, answer
    return str(answer["code"])


async def read_until(events: AsyncIterator[SessionEvent], needle: bytes, timeout: float = 5.0) -> bytes:
    """Output of ``events`` up to and including ``needle``."""
    seen = b""
    async with asyncio.timeout(timeout):
        async for event in events:
            if event.stream in (Stream.STDOUT, Stream.STDERR):
                seen += event.data
                if needle in seen:
                    return seen
            if event.stream is Stream.EXIT:
                break
    raise AssertionError(f"{needle!r} not in {seen!r}")


async def exit_code_of(events: AsyncIterator[SessionEvent], timeout: float = 5.0) -> int | None:
    async with asyncio.timeout(timeout):
        async for event in events:
            if event.stream is Stream.EXIT:
                return event.exit_code
    return None


async def wait_exited(client: AgentClient, session_id: str, timeout: float = 5.0) -> int | None:
    async def exited() -> bool:
        return not (await client.session(session_id)).running

    await eventually_async(exited, timeout, f"{session_id} still running")
    return (await client.session(session_id)).exit_code


def sh(script: str, **kwargs: object) -> ExecRequest:
    return ExecRequest("sh", ("-c", script), **kwargs)  # type: ignore[arg-type]


async def written(path: Path, timeout: float = 5.0) -> None:
    """Wait until a command has written something into ``path``."""
    await eventually_async(
        lambda: path.exists() and path.read_text().strip(), timeout, f"nothing written to {path}"
    )


# ------------------------------------------------------------------------- exec


async def test_ping_names_the_agent(agent: RunningAgent, client: AgentClient) -> None:
    await client.ping()
    frames = await raw_exchange(agent.socket, json_frame({"op": "ping"}))
    answer = json.loads(frames[0][1])
    assert answer["ok"] is True and answer["pid"] == agent.proc.pid and answer["version"]


async def test_exec_output_exit_code_and_streams(client: AgentClient) -> None:
    result = await client.exec(sh("echo out; echo err >&2; exit 3"))
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.timed_out and not result.truncated
    echo = await client.exec(ExecRequest("echo", ("a b", "c")))
    assert echo.stdout == b"a b c\n"


async def test_exec_environment_and_cwd(agent: RunningAgent, client: AgentClient) -> None:
    script = 'echo "$FROM_AGENT $BOTH $FROM_REQUEST $HOME $LANG"; pwd'
    result = await client.exec(sh(script, envs={"BOTH": "request", "FROM_REQUEST": "yes"}, cwd="/usr"))
    assert result.stdout == b"agent request yes /root C.UTF-8\n/usr\n"
    default = await client.exec(ExecRequest("pwd"))
    assert default.stdout.decode().strip() == str(agent.workdir)


async def test_envs_set_after_start_reach_later_commands(agent: RunningAgent, client: AgentClient) -> None:
    await client.set_envs({"FROM_CREATE": "late", "BOTH": "create"})
    result = await client.exec(sh('echo "$FROM_AGENT $FROM_CREATE $BOTH"', envs={"BOTH": "request"}))
    assert result.stdout == b"agent late request\n"  # the request's own envs still win
    frames = await raw_exchange(agent.socket, json_frame({"op": "env.set", "envs": {"A=B": "x"}}))
    answer = json.loads(frames[0][1])
    assert answer["ok"] is False and answer["code"] == "invalid" and "A=B" in answer["message"]


async def test_exec_signal_death_is_128_plus_n(client: AgentClient) -> None:
    assert (await client.exec(sh("kill -TERM $$"))).exit_code == 128 + signal.SIGTERM


async def test_commands_get_default_signal_dispositions(client: AgentClient) -> None:
    # Python ignores SIGPIPE; a child that inherited that would see EPIPE and complain
    result = await client.exec(sh("yes | head -c 4; grep -E '^Sig(Ign|Blk)' /proc/self/status"))
    lines = result.stdout.decode().split("\n")
    assert lines[:2] == ["y", "y"] and result.stderr == b""
    masks = dict(line.split(":\t") for line in lines[2:4])
    assert int(masks["SigBlk"], 16) == 0
    # glibc's posix_spawn leaves its two internal signals (32, 33) ignored; no others
    assert int(masks["SigIgn"], 16) & ~(0b11 << 31) == 0


async def test_commands_inherit_only_stdio(client: AgentClient) -> None:
    result = await client.exec(ExecRequest("ls", ("/proc/self/fd",)))
    assert result.stdout.split() == [b"0", b"1", b"2", b"3"]  # 3: ls's own listing


async def test_exec_missing_or_unrunnable_command(agent: RunningAgent, client: AgentClient) -> None:
    missing = await client.exec(ExecRequest("no-such-command-xyz"))
    assert missing.exit_code == 127 and b"command not found" in missing.stderr
    plain = agent.workdir / "plain.txt"
    plain.write_text("not a program")
    denied = await client.exec(ExecRequest(str(plain)))
    assert denied.exit_code == 126 and b"Permission denied" in denied.stderr
    (agent.workdir / "sub").mkdir()  # not the agent's own directory
    script = agent.workdir / "sub" / "run.sh"
    script.write_text("#!/bin/sh\necho relative to cwd\n")
    script.chmod(0o755)
    relative = await client.exec(ExecRequest("./run.sh", cwd=str(agent.workdir / "sub")))
    assert relative.stdout == b"relative to cwd\n"
    bad_cwd = await client.exec(ExecRequest("true", cwd="/no/such/dir"))
    assert bad_cwd.exit_code == 127 and b"/no/such/dir" in bad_cwd.stderr


async def test_exec_timeout_kills_the_process_group(agent: RunningAgent, client: AgentClient) -> None:
    pid_file = agent.workdir / "bg.pid"
    started = time.monotonic()
    result = await client.exec(sh(f"sleep 30 & echo $! > {pid_file}; echo started; wait", timeout_s=0.4))
    assert time.monotonic() - started < 3
    assert result.timed_out and result.exit_code == 124 and result.stdout == b"started\n"
    assert pid_gone(int(pid_file.read_text()))


async def test_exec_does_not_wait_for_background_holders_of_its_pipes(client: AgentClient) -> None:
    started = time.monotonic()
    result = await client.exec(sh("sleep 5 & echo done"))
    assert result.stdout == b"done\n" and result.exit_code == 0
    assert time.monotonic() - started < 2


async def test_exec_output_is_capped_per_stream(agent: RunningAgent) -> None:
    small = agent.client(output_limit=1000)
    result = await small.exec(sh("head -c 300000 /dev/zero; echo tail >&2"))
    assert result.truncated and result.stdout == b"\0" * 1000 and result.stderr == b"tail\n"
    assert result.exit_code == 0


async def test_exec_large_output_arrives_whole(client: AgentClient) -> None:
    result = await client.exec(sh("head -c 5000000 /dev/urandom | od -An -v | head -c 6000000"))
    assert len(result.stdout) == 6_000_000 and not result.truncated


async def test_many_concurrent_execs(client: AgentClient) -> None:
    results = await asyncio.gather(*(client.exec(ExecRequest("echo", (str(i),))) for i in range(100)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(100)]


async def test_exec_round_trips_are_fast(client: AgentClient) -> None:
    started = time.monotonic()
    for _ in range(50):
        assert (await client.exec(ExecRequest("true"))).exit_code == 0
    assert time.monotonic() - started < 5  # ~1-2 ms each when idle


# --------------------------------------------------------------------- sessions


async def test_session_stdin_and_eof(client: AgentClient) -> None:
    info = await client.start_session("cat", SessionSpec("cat"))
    assert info.running and info.exit_code is None and not info.pty
    async with client.attach("cat") as att:
        await att.send_stdin(b"hello\n")
        assert b"hello\n" in await read_until(att, b"hello\n")
        await att.close_stdin()
        assert await exit_code_of(att) == 0
    assert (await client.session("cat")).exit_code == 0


async def test_late_attach_replays_scrollback_then_exit(client: AgentClient) -> None:
    await client.start_session("s", SessionSpec("sh", ("-c", "echo one; sleep 0.05; echo two >&2; exit 7")))
    assert await wait_exited(client, "s") == 7
    async with client.attach("s") as att:
        assert att.info.exit_code == 7 and not att.info.running
        events = [e async for e in att]
    assert events == [
        SessionEvent(Stream.STDOUT, b"one\n"),
        SessionEvent(Stream.STDERR, b"two\n"),
        SessionEvent(Stream.SCROLLBACK_END),
        SessionEvent(Stream.EXIT, exit_code=7),
    ]


async def test_scrollback_keeps_the_last_mebibyte(client: AgentClient) -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' a; printf END"
    await client.start_session("big", SessionSpec("sh", ("-c", script)))
    await wait_exited(client, "big")
    async with client.attach("big") as att:
        replay = b"".join([e.data async for e in att if e.stream is Stream.STDOUT])
    assert len(replay) == 1 << 20 and replay.endswith(b"aaaEND")


async def test_two_clients_attached_at_once(client: AgentClient) -> None:
    await client.start_session("shared", SessionSpec("cat"))
    async with client.attach("shared") as first, client.attach("shared") as second:
        assert (await client.session("shared")).attached_clients == 2
        await first.send_stdin(b"to both\n")
        assert b"to both" in await read_until(first, b"to both\n")
        assert b"to both" in await read_until(second, b"to both\n")
        await client.kill_session("shared", signal.SIGKILL)
        assert await exit_code_of(first) == 137
        assert await exit_code_of(second) == 137
    assert (await client.session("shared")).attached_clients == 0


async def test_kill_sends_the_signal_to_the_group(agent: RunningAgent, client: AgentClient) -> None:
    pid_file = agent.workdir / "child.pid"
    await client.start_session("k", SessionSpec("sh", ("-c", f"sleep 30 & echo $! > {pid_file}; wait")))
    await written(pid_file)
    await client.kill_session("k", signal.SIGTERM)
    assert await wait_exited(client, "k") == 128 + signal.SIGTERM
    assert pid_gone(int(pid_file.read_text()))


async def test_session_ends_after_max_run_after_disconnect(client: AgentClient) -> None:
    await client.start_session("idle", SessionSpec("sleep", ("30",), max_run_after_disconnect_s=0.3))
    async with client.attach("idle"):
        await asyncio.sleep(0.6)  # attached: kept alive past the limit
        assert (await client.session("idle")).running
    started = time.monotonic()
    assert await wait_exited(client, "idle") == 137
    assert 0.2 < time.monotonic() - started < 2


async def test_session_timeout_kills_it(client: AgentClient) -> None:
    await client.start_session("t", SessionSpec("sleep", ("30",), timeout_s=0.2))
    assert await wait_exited(client, "t") == 137


async def test_session_ids_listing_and_errors(client: AgentClient) -> None:
    await client.start_session("a", SessionSpec("sleep", ("30",)))
    with pytest.raises(Conflict):
        await client.start_session("a", SessionSpec("true"))
    failed = await client.start_session("b", SessionSpec("no-such-command-xyz"))
    assert not failed.running and failed.exit_code == 127
    assert {s.id for s in await client.list_sessions()} == {"a", "b"}
    async with client.attach("b") as att:
        assert b"command not found" in await read_until(att, b"not found")
    for call in (client.session("zzz"), client.kill_session("zzz")):
        with pytest.raises(NotFound):
            await call
    with pytest.raises(NotFound):
        async with client.attach("zzz"):
            pass
    await client.kill_session("a")


async def test_resize_needs_a_terminal(client: AgentClient) -> None:
    await client.start_session("plain", SessionSpec("cat"))
    async with client.attach("plain") as att:
        with pytest.raises(InvalidInput):
            await att.resize(100, 40)
    with pytest.raises(InvalidInput):
        await client.resize_session("plain", 100, 40)
    with pytest.raises(NotFound):
        await client.resize_session("zzz", 100, 40)


# ------------------------------------------------------------------------- PTYs


async def test_pty_runs_a_shell_with_a_terminal(client: AgentClient) -> None:
    info = await client.start_session("pty", SessionSpec("sh", pty=PtySize(80, 24)))
    assert info.pty
    async with client.attach("pty") as att:
        await att.send_stdin(b"echo $TERM $((6*7)); tty\n")
        out = await read_until(att, b"/dev/pts/")
        assert b"xterm-256color 42" in out
        await att.send_stdin(b"exit 3\n")
        assert await exit_code_of(att) == 3


async def test_pty_resize_reaches_stty(client: AgentClient) -> None:
    await client.start_session("tty", SessionSpec("sh", pty=PtySize(80, 24)))
    async with client.attach("tty") as att:
        await att.send_stdin(b"stty size\n")
        assert b"24 80" in await read_until(att, b"24 80")
        await att.resize(132, 43)
        await att.send_stdin(b"stty size\n")
        assert b"43 132" in await read_until(att, b"43 132")
    await client.resize_session("tty", 100, 30)
    async with client.attach("tty") as att:
        await att.send_stdin(b"stty size\n")
        assert b"30 100" in await read_until(att, b"30 100")
        await client.kill_session("tty")


async def test_pty_ctrl_c_interrupts_the_foreground_job(client: AgentClient) -> None:
    script = 'trap "echo interrupted; exit 5" INT; echo ready; while :; do sleep 0.05; done'
    await client.start_session("intr", SessionSpec("sh", ("-c", script), pty=PtySize()))
    async with client.attach("intr") as att:
        await read_until(att, b"ready")
        await att.close_stdin()  # a no-op on a terminal
        await att.send_stdin(b"\x03")
        assert b"interrupted" in await read_until(att, b"interrupted")
        assert await exit_code_of(att) == 5


# ------------------------------------------------------------------------ files


async def chunks_of(
    data: bytes, sizes: tuple[int, ...] = (1, 70000, 1 << 20, 3 << 20)
) -> AsyncIterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos : pos + size]
        pos, i = pos + size, i + 1


async def test_file_round_trip_of_ten_megabytes(agent: RunningAgent, client: AgentClient) -> None:
    data = os.urandom(10_000_000)
    target = f"{agent.workdir}/deep/er/file.bin"
    assert await client.write_file(target, chunks_of(data), mode=0o600) == len(data)
    digest = hashlib.sha256()
    async with await client.read_file(target) as chunks:
        async for chunk in chunks:
            assert len(chunk) <= 256 << 10
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    entry = await client.stat(target)
    assert entry is not None and entry.size == len(data) and entry.mode == 0o600 and not entry.is_dir
    assert [e.name for e in (await client.list_dir(f"{agent.workdir}/deep/er")).entries] == ["file.bin"]


async def test_write_replaces_atomically_and_empty_files_work(
    agent: RunningAgent, client: AgentClient
) -> None:
    target = agent.workdir / "f.txt"
    target.write_text("old")
    assert await client.write_file(str(target), chunks_of(b"new")) == 3
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o644
    assert await client.write_file(str(target), chunks_of(b"")) == 0
    assert target.read_bytes() == b""
    async with await client.read_file(str(target)) as chunks:
        assert [c async for c in chunks] == []


async def test_write_errors_leave_nothing_behind(agent: RunningAgent, client: AgentClient) -> None:
    (agent.workdir / "dir").mkdir()
    (agent.workdir / "file").write_text("x")
    with pytest.raises(InvalidInput):
        await client.write_file(f"{agent.workdir}/dir", chunks_of(os.urandom(3 << 20)))
    with pytest.raises(InvalidInput):
        await client.write_file(f"{agent.workdir}/file/child", chunks_of(b"x"))
    with pytest.raises(InvalidInput):
        await client.write_file("relative/path", chunks_of(b"x"))
    assert sorted(p.name for p in agent.workdir.iterdir()) == ["agent.log", "agent.sock", "dir", "file"]
    assert list((agent.workdir / "dir").iterdir()) == []
    await client.ping()


async def test_read_errors_come_before_the_first_chunk(agent: RunningAgent, client: AgentClient) -> None:
    with pytest.raises(NotFound):
        await client.read_file(f"{agent.workdir}/missing")
    with pytest.raises(InvalidInput):
        await client.read_file(str(agent.workdir))
    with pytest.raises(InvalidInput):
        await client.read_file("/dev/zero")  # not a regular file: would never end


async def test_list_and_stat_do_not_follow_symlinks(agent: RunningAgent, client: AgentClient) -> None:
    root = agent.workdir / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello")
    (root / "link").symlink_to("/etc")
    entries = {e.name: e for e in (await client.list_dir(str(root))).entries}
    assert sorted(entries) == ["a.txt", "link", "sub"]
    assert entries["sub"].is_dir and not entries["a.txt"].is_dir and entries["a.txt"].size == 5
    assert entries["link"].is_symlink and not entries["link"].is_dir
    assert entries["a.txt"].path == f"{root}/a.txt" and entries["a.txt"].modified_at > 0
    assert await client.stat(f"{root}/missing") is None
    assert await client.stat(f"{root}/a.txt/below") is None
    link = await client.stat(f"{root}/link")
    assert link is not None and link.is_symlink
    with pytest.raises(NotFound):
        await client.list_dir(f"{root}/missing")
    with pytest.raises(InvalidInput):
        await client.list_dir(f"{root}/a.txt")


async def test_mkdir_is_p_and_conflicts_with_files(agent: RunningAgent, client: AgentClient) -> None:
    await client.mkdir(f"{agent.workdir}/x/y/z")
    await client.mkdir(f"{agent.workdir}/x/y/z")
    assert (agent.workdir / "x/y/z").is_dir()
    (agent.workdir / "f").write_text("")
    with pytest.raises(Conflict):
        await client.mkdir(f"{agent.workdir}/f")


async def test_remove_is_rm_rf_without_following_links(agent: RunningAgent, client: AgentClient) -> None:
    outside = agent.workdir / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    tree = agent.workdir / "tree"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/f").write_text("x")
    (tree / "a/link").symlink_to(outside)
    await client.remove(str(tree))
    assert not tree.exists() and (outside / "keep.txt").read_text() == "keep"
    (agent.workdir / "lonely-link").symlink_to(outside)
    await client.remove(f"{agent.workdir}/lonely-link")
    assert outside.is_dir() and not (agent.workdir / "lonely-link").is_symlink()
    with pytest.raises(NotFound):
        await client.remove(str(tree))
    with pytest.raises(InvalidInput):
        await client.remove("/")


# ----------------------------------------------------------------- ports, misc


async def test_ports_lists_tcp_listeners(client: AgentClient) -> None:
    with socket.socket() as v4:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        port = v4.getsockname()[1]
        assert port in await client.ports()
    assert port not in await client.ports()
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6) as v6:
            try:
                v6.bind(("::1", 0))
            except OSError:
                return
            v6.listen()
            assert v6.getsockname()[1] in await client.ports()


async def test_long_socket_paths_work_on_both_ends(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with running_agent(socket_dir=deep) as agent:
        assert len(str(agent.socket)) > 108
        await agent.client().ping()


# --------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xff" * 20, "invalid"),  # unknown frame type
        (b"\x10\x7f\xff\xff\xff", "invalid"),  # length of 2 GiB
        (encode_frame(FrameType.JSON, b"{not json"), "invalid"),
        (encode_frame(FrameType.JSON, b"\xff\xfe"), "invalid"),  # not UTF-8
        (json_frame(["a", "list"]), "invalid"),
        (json_frame({"op": ["unhashable"]}), "invalid"),
        (json_frame({"op": "nope"}), "invalid"),
        (json_frame({"op": "exec", "cmd": "true", "envs": {"A=B": "x"}}), "invalid"),
        (json_frame({"op": "exec", "cmd": "true", "args": [1]}), "invalid"),
        (json_frame({"op": "exec", "cmd": "true", "timeout": "soon"}), "invalid"),
        (json_frame({"op": "exec", "cmd": "a\u0000b"}), "invalid"),
        (json_frame({"op": "file.read"}), "invalid"),
        (json_frame({"op": "session.kill", "id": "x", "signal": 999}), "not_found"),
        (encode_frame(FrameType.DATA, b"data first"), "invalid"),
        (encode_frame(FrameType.JSON, b"[" * 100_000 + b"]" * 100_000), "invalid"),
        (json_frame({"op": "ping"})[:-1] + b"x", "invalid"),
    ],
)
async def test_garbage_is_refused_and_the_agent_stays_up(
    agent: RunningAgent, client: AgentClient, data: bytes, code: str
) -> None:
    assert error_code(await raw_exchange(agent.socket, data)) == code
    await client.ping()


async def test_abandoned_and_truncated_connections_do_not_block_others(
    agent: RunningAgent, client: AgentClient
) -> None:
    idle = [await asyncio.open_unix_connection(agent.socket) for _ in range(30)]
    half = await asyncio.open_unix_connection(agent.socket)
    half[1].write(b"\x10\x00\x00\x10\x00{")  # a frame header and a byte of 4 KiB
    await half[1].drain()
    await client.ping()
    assert (await client.exec(ExecRequest("echo", ("still",)))).stdout == b"still\n"
    for _, writer in [*idle, half]:
        writer.close()
    await client.ping()


async def test_host_leaving_an_exec_kills_it(agent: RunningAgent, client: AgentClient) -> None:
    pid_file = agent.workdir / "exec.pid"
    _, writer = await asyncio.open_unix_connection(agent.socket)
    writer.write(
        json_frame({"op": "exec", "cmd": "sh", "args": ["-c", f"echo $$ > {pid_file}; exec sleep 30"]})
    )
    await writer.drain()
    await written(pid_file)
    writer.close()
    await writer.wait_closed()
    assert pid_gone(int(pid_file.read_text()))
    await client.ping()


# ---------------------------------------------------------------- ending


async def test_shutdown_kills_sessions_and_exits(agent: RunningAgent, client: AgentClient) -> None:
    pid_file = agent.workdir / "s.pid"
    await client.start_session("s", SessionSpec("sh", ("-c", f"echo $$ > {pid_file}; exec sleep 30")))
    await written(pid_file)
    await client.shutdown()
    assert agent.proc.wait(5) == 0
    assert pid_gone(int(pid_file.read_text()))
    with pytest.raises(AgentError):
        await client.ping()


async def test_sigterm_ends_sessions_and_the_agent(agent: RunningAgent, client: AgentClient) -> None:
    pid_file = agent.workdir / "s.pid"
    await client.start_session("s", SessionSpec("sh", ("-c", f"echo $$ > {pid_file}; exec sleep 30")))
    await written(pid_file)
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(5) == 0
    assert pid_gone(int(pid_file.read_text()))
