"""The real OpenComputer Python SDK (``opencomputer-sdk``) against a real corral server.

The SDK talks to the control plane (``/api``, API key) for the lifecycle and, with the
``connectURL`` and token a create returns, to the worker routes for exec and PTY.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from opencomputer import Sandbox

from tests.e2e.conftest import Server
from tests.support.conditions import eventually_async

pytestmark = pytest.mark.e2e

WAIT_S = 30


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    await eventually_async(condition, timeout, f"timed out waiting for {what}")


async def test_exec_run_returns_output_exit_code_env_and_cwd(sandbox: Sandbox) -> None:
    result = await sandbox.exec.run("echo hello; echo oops >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "hello\n", "oops\n")

    result = await sandbox.exec.run('echo "$GREETING"; pwd', env={"GREETING": "hi there"}, cwd="/tmp")
    assert (result.exit_code, result.stdout) == (0, "hi there\n/tmp\n")

    result = await sandbox.exec.run("cat /etc/os-release; python3 -c 'print(6*7)'")
    assert "debian" in result.stdout.lower()
    assert result.stdout.endswith("42\n")


async def test_exec_start_streams_output_and_takes_stdin(sandbox: Sandbox) -> None:
    chunks: list[bytes] = []
    program = "import sys, time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
    session = await sandbox.exec.start("python3", args=["-c", program], on_stdout=chunks.append)
    assert await asyncio.wait_for(session.done, WAIT_S) == 0
    assert b"".join(chunks) == b"tick 0\ntick 1\ntick 2\n"
    await session.close()

    echoed: list[bytes] = []
    cat = await sandbox.exec.start("cat", on_stdout=echoed.append)
    await cat.send_stdin("ping\n")
    await until(lambda: b"ping\n" in b"".join(echoed), "cat to echo stdin")
    await cat.send_stdin(b"pong\n")
    await until(lambda: b"pong\n" in b"".join(echoed), "cat to echo more stdin")
    await cat.kill()
    code = await asyncio.wait_for(cat.done, WAIT_S)
    assert code != 0, "a killed cat cannot exit 0"
    sessions = {s.session_id: s for s in await sandbox.exec.list()}
    assert sessions[cat.session_id].running is False
    await cat.close()


async def test_late_attach_replays_scrollback_then_the_marker_then_live_output(sandbox: Sandbox) -> None:
    seen: list[bytes] = []
    first = await sandbox.exec.start(
        "sh",
        args=["-c", "echo early; read x; echo late $x"],
        max_run_after_disconnect=120,
        on_stdout=seen.append,
    )
    await until(lambda: b"early" in b"".join(seen), "the first output")
    await first.close()  # detach; the session keeps running

    events: list[tuple[str, bytes]] = []
    late = await sandbox.exec.attach(
        first.session_id,
        on_stdout=lambda b: events.append(("out", b)),
        on_scrollback_end=lambda: events.append(("end", b"")),
    )
    await until(lambda: ("end", b"") in events, "the scrollback end marker")
    before = b"".join(data for kind, data in events[: events.index(("end", b""))])
    assert before == b"early\n"
    await late.send_stdin("now\n")
    assert await asyncio.wait_for(late.done, WAIT_S) == 0
    after = b"".join(data for kind, data in events[events.index(("end", b"")) + 1 :])
    assert after == b"late now\n"
    await late.close()


async def test_kill_session_by_id(sandbox: Sandbox) -> None:
    session = await sandbox.exec.start("sleep", args=["300"])
    await sandbox.exec.kill(session.session_id)
    assert await asyncio.wait_for(session.done, WAIT_S) != 0
    await session.close()


async def test_files_round_trip_10_mb_and_manage_directories(sandbox: Sandbox) -> None:
    data = os.urandom(10 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    await sandbox.files.write("/tmp/big.bin", data)
    assert hashlib.sha256(await sandbox.files.read_bytes("/tmp/big.bin")).hexdigest() == digest
    inside = await sandbox.exec.run("sha256sum /tmp/big.bin")
    assert inside.stdout.split()[0] == digest

    await sandbox.files.make_dir("/work/a/b")
    await sandbox.files.write("/work/a/b/note.txt", "hello")
    entries = {e.name: e for e in await sandbox.files.list("/work/a/b")}
    assert entries["note.txt"].is_dir is False
    assert entries["note.txt"].size == 5
    assert entries["note.txt"].path == "/work/a/b/note.txt"
    assert {e.name: e.is_dir for e in await sandbox.files.list("/work/a")} == {"b": True}
    assert await sandbox.files.read("/work/a/b/note.txt") == "hello"
    assert await sandbox.files.exists("/work/a/b/note.txt")

    await sandbox.files.remove("/work/a")
    assert not await sandbox.files.exists("/work/a/b/note.txt")
    assert not await sandbox.files.exists("/work/a")
    assert not await sandbox.files.exists("/no/such/file")


async def test_pty_runs_an_interactive_shell(sandbox: Sandbox) -> None:
    output = bytearray()
    pty = await sandbox.pty.create(cols=100, rows=30, on_output=output.extend)
    await pty.send("echo pty-$((40+2)); stty size\n")
    await until(lambda: b"pty-42" in output, "the PTY to answer")
    await until(lambda: b"30 100" in output.split(b"pty-42", 1)[1], "the PTY size")
    await pty.send("exit\n")
    await pty.close()


async def test_list_shows_the_sandbox_and_kill_removes_it(server: Server) -> None:
    sb = await Sandbox.create(template="base", timeout=600, api_url=server.url, api_key=server.key)
    try:
        with server.http() as http:
            listed = {s["sandboxID"]: s for s in http.get("/sandboxes").json()}
            assert listed[sb.sandbox_id]["status"] == "running"
            assert listed[sb.sandbox_id]["templateID"] == "base"
            assert await sb.is_running()
            await sb.kill()
            assert sb.sandbox_id not in {s["sandboxID"] for s in http.get("/sandboxes").json()}
        assert not await sb.is_running()
    finally:
        await sb.close()


def standing_by(server: Server) -> float:
    with server.http() as http:
        metrics = http.get(f"{server.url}/metrics").text
    return float(metrics.split("\ncorral_sandboxes_standby ", 1)[1].split("\n", 1)[0])


async def test_creates_take_sandboxes_started_ahead_whatever_their_limits(server: Server) -> None:
    await until(lambda: standing_by(server) >= 2, "two sandboxes standing by")
    # when PID 1 (the agent) started, in 1/100 s (USER_HZ) since boot: the host's clock too
    started = "cut -d' ' -f22 /proc/1/stat"
    asked = int(float(Path("/proc/uptime").read_text().split()[0]) * 100)  # before either create
    ahead = await Sandbox.create(
        template="base", timeout=600, envs={"A": "1"}, api_url=server.url, api_key=server.key
    )
    limited = await Sandbox.create(
        template="base", timeout=600, memory_mb=256, api_url=server.url, api_key=server.key
    )
    try:
        for sb in (ahead, limited):
            start = int((await sb.exec.run(started)).stdout)
            assert start <= asked, (start, asked)  # started before it was asked for
        assert (await ahead.exec.run("echo $A")).stdout == "1\n"  # its envs given late
        memory = await limited.exec.run("cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert int(memory.stdout) == 256 << 20  # its limits changed in place
        await until(lambda: standing_by(server) >= 2, "the standby refilled")
    finally:
        for sb in (ahead, limited):
            await sb.kill()
            await sb.close()


async def test_a_wrong_key_is_refused(server: Server) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        await Sandbox.create(template="base", api_url=server.url, api_key="ek_wrongkey01_" + "0" * 32)
    assert info.value.response.status_code == 401
