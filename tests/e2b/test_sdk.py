"""The real ``e2b`` SDK (the pinned newest) against corral on runc: a sandbox's whole
life, commands, PTYs, files, ports, and what is refused."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    FilesystemEventType,
    InvalidArgumentException,
    NotFoundException,
    Sandbox,
    SandboxException,
    SandboxQuery,
    TimeoutException,
)
from e2b.envd.process import process_pb
from e2b.envd.process.process_connect import ProcessClientSync
from e2b.exceptions import SandboxNotFoundException
from e2b.sandbox.commands.command_handle import PtySize
from protobuf import Oneof
from pyqwest import HTTPVersion, SyncClient, SyncHTTPTransport

from tests.e2b.conftest import Org, Server
from tests.support.conditions import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(e2b_env: Server) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(envs={"GREETING": "hello"}, metadata={"suite": "e2b", "run": "sdk"})
    yield sandbox
    sandbox.kill()


def test_create_with_envs_and_metadata(sandbox: Sandbox) -> None:
    result = sandbox.commands.run('echo "$GREETING"; whoami; pwd')
    assert result.stdout.split() == ["hello", "sandbox", "/home/sandbox"]
    info = sandbox.get_info()
    assert info.metadata == {"suite": "e2b", "run": "sdk"}
    assert info.state.value == "running" and info.template_id == "base"
    listed = Sandbox.list(query=SandboxQuery(metadata={"run": "sdk"})).next_items()
    assert [s.sandbox_id for s in listed] == [sandbox.sandbox_id]


def test_commands(sandbox: Sandbox) -> None:
    seen: list[str] = []
    result = sandbox.commands.run("echo out; echo err >&2", on_stdout=seen.append)
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 0)
    assert "".join(seen) == "out\n"

    background = sandbox.commands.run("read _; echo done", background=True, stdin=True)
    assert background.pid in [p.pid for p in sandbox.commands.list()]  # it waits for its line
    sandbox.commands.send_stdin(background.pid, "go\n")
    assert background.wait().stdout == "done\n"

    reader = sandbox.commands.run("cat; echo end", background=True, stdin=True)
    sandbox.commands.send_stdin(reader.pid, "line one\n")
    reader.close_stdin()
    assert reader.wait().stdout == "line one\nend\n"

    with pytest.raises(CommandExitException) as failed:
        sandbox.commands.run("echo why >&2; exit 3")
    assert failed.value.exit_code == 3 and failed.value.stderr == "why\n"


def test_a_command_past_its_timeout(sandbox: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30; echo late", timeout=1)
    assert time.monotonic() - started < 10
    eventually(
        lambda: not [p for p in sandbox.commands.list() if "sleep 30" in " ".join(p.args)],
        10,
        "the command outlived its timeout",
    )


def test_pty_with_resize(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.resize(terminal.pid, PtySize(rows=33, cols=111))
    sandbox.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    screen: list[bytes] = []
    terminal.wait(on_pty=screen.append)
    assert b"33 111" in b"".join(screen)


def test_files(sandbox: Sandbox) -> None:
    files = sandbox.files
    files.write("notes/today.txt", "first line\n")
    assert files.read("notes/today.txt") == "first line\n"
    blob = bytes(range(256)) * 16
    files.write("notes/blob.bin", blob)
    assert bytes(files.read("notes/blob.bin", format="bytes")) == blob

    files.write("notes/streamed.bin", io.BytesIO(blob))  # a file object: octet-stream
    files.write("notes/zipped.bin", blob, gzip=True)  # octet-stream, Content-Encoding: gzip
    for name in ("streamed.bin", "zipped.bin"):
        assert bytes(files.read(f"notes/{name}", format="bytes")) == blob
        files.remove(f"notes/{name}")

    big = os.urandom(10 * 1024 * 1024)
    files.write("big.bin", big)
    assert (
        hashlib.sha256(bytes(files.read("big.bin", format="bytes"))).digest() == hashlib.sha256(big).digest()
    )

    assert files.make_dir("notes/deep/er") is True
    assert files.make_dir("notes/deep/er") is False
    assert {e.name for e in files.list("notes")} == {"today.txt", "blob.bin", "deep"}
    assert {e.path for e in files.list("notes", depth=3)} == {
        "/home/sandbox/notes/today.txt",
        "/home/sandbox/notes/blob.bin",
        "/home/sandbox/notes/deep",
        "/home/sandbox/notes/deep/er",
    }
    moved = files.rename("notes/today.txt", "notes/deep/moved.txt")
    assert moved.path == "/home/sandbox/notes/deep/moved.txt"
    assert files.read("notes/deep/moved.txt") == "first line\n" and not files.exists("notes/today.txt")
    assert (
        sandbox.commands.run("stat -c %U notes/deep/moved.txt notes/deep").stdout.split() == ["sandbox"] * 2
    )
    files.remove("notes/deep")
    assert not files.exists("notes/deep/moved.txt")
    with pytest.raises(NotFoundException):
        files.read("notes/none.txt")


def test_watch_dir(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("watched")
    watch = sandbox.files.watch_dir("watched", recursive=True)
    try:
        sandbox.files.write("watched/new.txt", "x")
        events: list[tuple[str, FilesystemEventType]] = []

        def created() -> bool:
            events.extend((e.name, e.type) for e in watch.get_new_events())
            return ("new.txt", FilesystemEventType.CREATE) in events

        eventually(
            created,
            10,
            lambda: f"no create event: {events}",
        )
    finally:
        watch.stop()


def test_get_host_is_fetched(sandbox: Sandbox, e2b_env: Server, alpha: Org) -> None:
    sandbox.commands.run("mkdir -p site && echo served > site/index.html")
    sandbox.commands.run("python3 -m http.server 8000 --directory site", background=True)
    host = sandbox.get_host(8000)
    assert host.startswith(f"8000-{sandbox.sandbox_id}.")

    def fetched() -> bool:
        answer = httpx.get(f"{e2b_env.url}/index.html", headers={"Host": host, "X-API-Key": alpha.key})
        return answer.status_code == 200 and answer.text == "served\n"

    eventually(fetched, 15, "the sandbox's server was not reached through get_host")
    # the same port through E2B_SANDBOX_URL, with the sandbox's headers (the code interpreter's way)
    headers = {
        "E2b-Sandbox-Id": sandbox.sandbox_id,
        "E2b-Sandbox-Port": "8000",
        "X-Access-Token": sandbox._envd_access_token or "",
    }
    assert httpx.get(f"{e2b_env.url}/index.html", headers=headers).text == "served\n"
    assert (
        httpx.get(f"{e2b_env.url}/index.html", headers={**headers, "X-Access-Token": "x"}).status_code == 401
    )


def test_envd_over_h2c(sandbox: Sandbox, e2b_env: Server) -> None:
    """The SDK's own Connect client on HTTP/2 with prior knowledge (what it speaks to a
    TLS sandbox URL): a Start stream through corral's h2c."""
    transport = SyncHTTPTransport(http_version=HTTPVersion.HTTP2)
    client = ProcessClientSync(e2b_env.url, http_client=SyncClient(transport))
    request = process_pb.StartRequest(
        process=process_pb.ProcessConfig(cmd="/bin/sh", args=["-c", "echo h2; exit 2"])
    )
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "X-Access-Token": sandbox._envd_access_token or ""}
    kinds, output, exit_code = [], b"", None
    for response in client.start(request, headers=headers):
        match response.event.event if response.event else None:
            case Oneof(
                field="data", value=process_pb.ProcessEvent.DataEvent(output=Oneof(value=bytes(chunk)))
            ):
                output += chunk
                kinds.append("data")
            case Oneof(field="end", value=process_pb.ProcessEvent.EndEvent(exit_code=int(code))):
                exit_code = code
                kinds.append("end")
            case Oneof(field=str(kind)):
                kinds.append(kind)
    assert (kinds[0], kinds[-1], output, exit_code) == ("start", "end", b"h2\n", 2)


def test_set_timeout_and_metrics(sandbox: Sandbox) -> None:
    [metric] = sandbox.get_metrics()
    assert metric.cpu_count == 1 and metric.mem_total == 512 * 1024 * 1024 and metric.disk_total > 0
    sandbox.set_timeout(1234)
    left = (sandbox.get_info().end_at - datetime.now(UTC)).total_seconds()
    assert 1200 < left <= 1234


def test_pause_resume_and_kill(e2b_env: Server) -> None:
    sandbox = Sandbox.create()
    try:
        sandbox.files.write("kept.txt", "still here")
        sleeper = sandbox.commands.run("sleep 600", background=True)
        assert sandbox.pause() is True
        assert Sandbox.get_info(sandbox.sandbox_id).state.value == "paused"
        assert Sandbox.pause(sandbox.sandbox_id) is False  # already paused
        resumed = Sandbox.connect(sandbox.sandbox_id)
        assert resumed.get_info().state.value == "running"
        assert resumed.commands.run("cat kept.txt").stdout == "still here"
        assert sleeper.pid in [p.pid for p in resumed.commands.list()]  # its memory was kept
    finally:
        assert Sandbox.kill(sandbox.sandbox_id) is True
    assert Sandbox.kill(sandbox.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sandbox.sandbox_id)


def test_another_org_and_a_viewer_are_refused(
    sandbox: Sandbox, e2b_env: Server, beta: Org, alpha: Org
) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sandbox.sandbox_id, api_key=beta.key)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sandbox.sandbox_id, api_key=beta.key)
    assert Sandbox.kill(sandbox.sandbox_id, api_key=beta.key) is False
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="ek_nobody0000_" + "0" * 48)

    viewer = alpha.key_of("viewer")
    assert Sandbox.get_info(sandbox.sandbox_id, api_key=viewer).sandbox_id == sandbox.sandbox_id
    with pytest.raises(SandboxException, match="403"):
        Sandbox.create(api_key=viewer)
    with pytest.raises(SandboxException, match="403"):
        Sandbox.set_timeout(sandbox.sandbox_id, 60, api_key=viewer)
    as_viewer = Sandbox.connect(sandbox.sandbox_id, api_key=viewer)  # a token that only reads
    assert as_viewer.files.read("notes/blob.bin", format="bytes")
    with pytest.raises(SandboxException, match="PERMISSION_DENIED"):
        as_viewer.commands.run("true")


def test_unknown_sandbox_is_not_found(e2b_env: Server) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("sb-0000000000000000")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("sb-0000000000000000")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("not an id")


def test_bad_connect_requests_get_connect_codes(sandbox: Sandbox, e2b_env: Server) -> None:
    url = f"{e2b_env.url}/filesystem.Filesystem/Stat"
    headers = {
        "E2b-Sandbox-Id": sandbox.sandbox_id,
        "X-Access-Token": sandbox._envd_access_token or "",
        "Content-Type": "application/json",
    }

    def stat(body: bytes, **changed: str) -> httpx.Response:
        return httpx.post(url, content=body, headers={**headers, **changed})

    wrong = stat(b'{"path": "/"}', **{"X-Access-Token": "not-a-token"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "unauthenticated")
    other = Sandbox.create()
    try:
        foreign = stat(b'{"path": "/"}', **{"X-Access-Token": other._envd_access_token or ""})
        assert foreign.json()["code"] == "unauthenticated"
    finally:
        other.kill()
    garbled = stat(b"{not json")
    assert garbled.json()["code"] == "invalid_argument" and garbled.status_code == 400
    empty = stat(b'{"path": ""}')
    assert empty.json() == {"code": "invalid_argument", "message": "path: is required"} or (
        empty.json()["code"] == "invalid_argument" and "path" in empty.json()["message"]
    )
    missing = stat(b'{"path": "/no/such/file"}')
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert stat(b'{"path": "/"}').json()["entry"]["type"] == "FILE_TYPE_DIRECTORY"
    with pytest.raises(InvalidArgumentException):
        sandbox.commands.run("true", user="nobody")
