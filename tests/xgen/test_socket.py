"""The xgen WebSocket through a real server on runc, with the protocol's client."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support.xgen_client import (
    ACK,
    ERROR,
    EXEC_EXIT,
    EXEC_START,
    EXEC_STDOUT,
    FS_READ,
    FS_WRITE,
    PING,
    SANDBOX_READY,
    XgenClient,
    XgenError,
    XgenSocket,
    pack,
)
from tests.xgen.conftest import Org, Server

pytestmark = pytest.mark.integration


async def test_ready_first_ping_and_exec_with_stdin(client: XgenClient, sandbox: str) -> None:
    async with client.connect(sandbox) as ws:
        assert ws.first is not None and (ws.first.kind, ws.first.channel, ws.first.id) == (
            SANDBOX_READY,
            0,
            0,
        )
        await ws.ping()
        cat = await ws.exec("sh", ["-c", "id -u; pwd; tr a-z A-Z; echo done >&2"])
        await cat.send(b"hello ")
        await cat.send(b"world\n")
        await cat.send(b"")  # no bytes after the prefix: EOF
        assert await cat.wait() == 0
        assert bytes(cat.stdout) == b"1000\n/home/sandbox/workspace\nHELLO WORLD\n"
        assert bytes(cat.stderr) == b"done\n"
        failing = await ws.exec("sh", ["-c", "exit 7"], env={}, cwd=None)
        assert await failing.wait() == 7


async def test_two_processes_interleaved_and_signals(client: XgenClient, sandbox: str) -> None:
    async with client.connect(sandbox) as ws:
        first = await ws.exec("cat")
        second = await ws.exec("cat")
        assert first.channel != second.channel
        for i in range(5):
            await first.send(f"one-{i}\n".encode())
            await second.send(f"two-{i}\n".encode())
            await first.until(f"one-{i}\n".encode())
            await second.until(f"two-{i}\n".encode())
        assert b"two" not in first.stdout and b"one" not in second.stdout
        await first.signal("SIGTERM")
        assert await first.wait() == -1
        await second.signal("SIGKILL")
        assert await second.wait() == -1


async def test_tty_with_resize(client: XgenClient, sandbox: str) -> None:
    async with client.connect(sandbox) as ws:
        shell = await ws.exec("/bin/bash", tty=True, cols=0, rows=0)
        await shell.send(b"stty size; echo err >&2\n")
        await shell.until(b"24 80")
        await shell.until(b"err")  # a tty merges stderr into stdout
        await shell.resize(132, 40)
        await shell.send(b"stty size; exit\n")
        await shell.until(b"40 132")
        assert await shell.wait() == 0
        assert not shell.stderr


async def test_a_5_mb_file_both_ways_list_and_remove(client: XgenClient, sandbox: str) -> None:
    data = os.urandom(5 << 20)
    async with client.connect(sandbox) as ws:
        await ws.write("big/blob.bin", data)
        assert await ws.read("big/blob.bin") == data
        assert await ws.read("/home/sandbox/workspace/big/blob.bin") == data
        await ws.write("/notes.txt", "text content")  # absolute: under the workspace too
        listed = {e["name"]: e for e in await ws.list(".")}
        assert set(listed) >= {"big", "notes.txt"}
        assert listed["big"]["isDir"] is True and listed["big"]["is_dir"] is True
        assert listed["notes.txt"]["size"] == len("text content")
        assert listed["notes.txt"]["modTime"] == listed["notes.txt"]["mod_time"] > 0
        owner = await ws.exec("stat", ["-c", "%u %s", "big/blob.bin"])
        assert await owner.wait() == 0
        assert bytes(owner.stdout) == f"1000 {len(data)}\n".encode()
        with pytest.raises(XgenError) as not_empty:
            await ws.remove("big")
        assert not_empty.value.code == "fs_error"
        await ws.remove("big", recursive=True)
        await ws.remove("notes.txt")
        assert {e["name"] for e in await ws.list(".")}.isdisjoint({"big", "notes.txt"})
        with pytest.raises(XgenError) as gone:
            await ws.read("notes.txt")
        assert gone.value.code == "fs_error"


async def test_paths_never_leave_the_workspace(client: XgenClient, sandbox: str) -> None:
    async with client.connect(sandbox) as ws:
        link = await ws.exec("ln", ["-s", "/etc", "out"])
        assert await link.wait() == 0
        for path in ("../../../etc/passwd", "out/passwd", "sub/../../x"):
            with pytest.raises(XgenError) as escaped:
                await ws.read(path)
            assert escaped.value.code == "fs_error", path
        with pytest.raises(XgenError) as written:
            await ws.write("out/evil", b"x")
        assert written.value.code == "fs_error"
        assert (await client.exec(sandbox, "test -e /etc/evil; echo $?"))["stdout"] == "1\n"


async def events_until(ws: XgenSocket, last: tuple[str, str]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    while last not in seen:
        try:
            event = await asyncio.wait_for(ws.events.get(), 10)
        except TimeoutError:
            raise AssertionError(f"no {last} in {seen}") from None
        seen.append((event["path"], event["type"]))
    return seen


async def test_watch_events_for_created_and_deleted(client: XgenClient, sandbox: str) -> None:
    async with client.connect(sandbox) as ws:
        await ws.watch(".")
        await ws.write("first.txt", b"x")
        assert ("first.txt", "created") in await events_until(ws, ("first.txt", "created"))
        made = await ws.exec("mkdir", ["w"])
        assert await made.wait() == 0
        await events_until(ws, ("w", "created"))  # the new directory is watched from here on
        changed = await ws.exec("sh", ["-c", "echo x > w/f.txt && rm w/f.txt"])
        assert await changed.wait() == 0
        seen = await events_until(ws, ("w/f.txt", "deleted"))
        assert seen.index(("w/f.txt", "created")) < seen.index(("w/f.txt", "deleted"))
        await ws.unwatch(".")
        await ws.write("after.txt", b"quiet")
        await ws.ping()
        assert ws.events.empty()


async def test_ports_and_stats(client: XgenClient, sandbox: str) -> None:
    early = await client.exec(sandbox, "nohup python3 -m http.server 8111 >/dev/null 2>&1 & sleep 0.01")
    assert early["exit_code"] == 0
    async with client.connect(sandbox) as ws:
        opened = await asyncio.wait_for(ws.ports.get(), 15)
        while opened != ("open", 8111):  # announced on connect
            opened = await asyncio.wait_for(ws.ports.get(), 15)
        server = await ws.exec("python3", ["-m", "http.server", "8222"])
        while (event := await asyncio.wait_for(ws.ports.get(), 15)) != ("open", 8222):
            pass
        await server.signal("SIGTERM")
        await server.wait()
        while (event := await asyncio.wait_for(ws.ports.get(), 15)) != ("close", 8222):
            pass
        assert event == ("close", 8222)
        stats = await asyncio.wait_for(ws.stats.get(), 15)
        assert set(stats) == {"cpu_percent", "memory_bytes", "disk_used_bytes"}
        assert stats["memory_bytes"] > 1 << 20
        assert stats["disk_used_bytes"] > 0
        assert stats["cpu_percent"] >= 0


async def test_bad_frames_are_error_frames_and_the_connection_stays(client: XgenClient, sandbox: str) -> None:
    async with client.connect(sandbox) as ws:
        cases = [
            (b"\x01\x00\x00", "invalid_payload"),  # shorter than the header
            (pack(0x7F, 0, 9), "unknown_message"),
            (struct.pack(">BII", FS_READ, 0, 10) + b"\xc1", "invalid_payload"),  # not MessagePack
            (pack(FS_READ, 0, 11, {"nopath": 1}), "invalid_payload"),  # a field missing
            (pack(FS_WRITE, 0, 12, {"path": "x", "content": 5}), "invalid_payload"),
            (pack(EXEC_START, 5, 13, {"args": []}), "invalid_payload"),  # no command
            (pack(EXEC_START, 6, 14, {"command": "true", "tty": "yes"}), "invalid_payload"),
        ]
        for data, code in cases:
            await ws.send(data)
            error = await asyncio.wait_for(ws.errors.get(), 10)
            assert error.kind == ERROR
            assert error.body()["code"] == code, (data, error.body())
            if len(data) >= 9:
                assert (error.channel, error.id) == struct.unpack(">II", data[1:9])
        await ws.send(pack(PING, 0, 99))
        assert (await asyncio.wait_for(ws.pongs.get(), 10)).id == 99
        echo = await ws.exec("echo", ["still up"])
        assert await echo.wait() == 0 and bytes(echo.stdout) == b"still up\n"


async def test_ack_of_exec_names_process_and_channel(client: XgenClient, sandbox: str) -> None:
    async with client.connect(sandbox) as ws:
        frame = await ws.call(EXEC_START, {"command": "true"}, channel=4242)
        assert frame.kind == ACK and frame.id > 0
        assert frame.body()["channel"] == 4242 and frame.body()["process_id"]


async def test_websocket_auth(client: XgenClient, alpha: Org, beta: Org, sandbox: str) -> None:
    async with beta.client() as other:
        with pytest.raises(InvalidStatus) as hidden:
            async with other.connect(sandbox):
                pass
        assert hidden.value.response.status_code == 404
    async with alpha.client("viewer") as viewer:
        with pytest.raises(InvalidStatus) as denied:
            async with viewer.connect(sandbox):
                pass
        assert denied.value.response.status_code == 403
    forger = XgenClient(alpha.server.url, "ek_forged_key")
    forger._token, forger._expires = alpha.server.resigned(await client.token(), secret="f" * 64), 1e12
    async with forger:
        with pytest.raises(InvalidStatus) as forged:
            async with forger.connect(sandbox):
                pass
    assert forged.value.response.status_code == 401


async def test_a_read_over_the_limit_is_an_error_naming_it(client: XgenClient, sandbox: str) -> None:
    made = await client.exec(sandbox, "head -c 17M /dev/zero > huge.bin")
    assert made["exit_code"] == 0
    async with client.connect(sandbox) as ws:
        with pytest.raises(XgenError) as refused:
            await ws.read("huge.bin")
        assert refused.value.code == "fs_error"
        assert str(16 << 20) in refused.value.message
        await ws.ping()


async def test_a_deleted_sandbox_ends_the_connection_with_sandbox_error(client: XgenClient) -> None:
    sandbox_id = (await client.create("base"))["id"]
    async with client.connect(sandbox_id) as ws:
        await client.delete(sandbox_id)
        error = await asyncio.wait_for(ws.sandbox_errors.get(), 15)
        assert error == {"code": "sandbox_stopped", "message": "the sandbox is stopped"}
        await asyncio.wait_for(ws.closed.wait(), 15)


async def test_a_client_that_does_not_read_is_not_buffered_for(
    xgen: Server, client: XgenClient, sandbox: str
) -> None:
    """64 MiB of output for a client that reads nothing: corral holds a few MiB and the
    process waits (its writes stall), then everything arrives once the client reads."""
    total = 64 << 20
    url = xgen.url.replace("http", "ws", 1) + f"/api/v1/sandboxes/{sandbox}/ws?token={await client.token()}"
    async with websockets.connect(url, max_queue=1, max_size=1 << 20, compression=None) as ws:
        assert (await ws.recv())[0] == SANDBOX_READY
        before = xgen.rss()
        await ws.send(
            pack(EXEC_START, 7, 1, {"command": "sh", "args": ["-c", f"head -c {total} /dev/zero; echo end"]})
        )
        written = await stalled_writes(client, sandbox)  # the producer waits for the client
        assert written < total // 2, written
        assert xgen.rss() - before < 48 << 20, (before, xgen.rss())
        received = 0
        while True:  # the client reads: all of it comes, then the exit
            data = await asyncio.wait_for(ws.recv(), 30)
            assert isinstance(data, bytes)
            kind, channel = data[0], struct.unpack(">I", data[1:5])[0]
            if channel == 7 and kind == EXEC_STDOUT:
                received += len(data) - 9
            if channel == 7 and kind == EXEC_EXIT:
                break
        assert received == total + len(b"end\n")


async def stalled_writes(client: XgenClient, sandbox: str) -> int:
    """What ``head`` has written once two readings of its write count, 0.5 s apart, agree."""
    script = "cat /proc/$(pgrep -x head)/io 2>&1 | awk '/^wchar/ {print $2}'; pgrep -a head"
    readings: list[str] = []
    last = -1
    for _ in range(60):
        out = (await client.exec(sandbox, script))["stdout"].strip()
        readings.append(out)
        first = out.split("\n")[0]
        now = int(first) if first.isdigit() else -1
        if now > 0 and now == last:
            return now
        last = now
        await asyncio.sleep(0.5)  # how long a writer must be still to be called stalled
    raise AssertionError(f"head never stalled: {readings}")
