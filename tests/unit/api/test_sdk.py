"""The real OpenComputer Python SDK (``opencomputer-sdk``) against a real corral server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from opencomputer import Sandbox  # type: ignore[import-untyped]

from tests.support.app import KEY
from tests.unit.api.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_python_sdk_end_to_end(live: Live) -> None:
    sandbox = await Sandbox.create(
        api_url=live.url,
        api_key=KEY,
        template="base",
        timeout=0,
        envs={"WHO": "sdk"},
        disk_mb=4096,
        burst=True,
    )
    try:
        assert sandbox.id.startswith("sb-") and sandbox._connect_url == live.url
        assert await sandbox.is_running()

        result = await sandbox.exec.run("echo hi $WHO; echo bad >&2; exit 2")
        assert (result.exit_code, result.stdout, result.stderr) == (2, "hi sdk\n", "bad\n")

        out: list[bytes] = []
        session = await sandbox.exec.start("sh", args=["-c", "read x; echo got:$x"], on_stdout=out.append)
        await session.send_stdin("ping\n")
        assert await asyncio.wait_for(session.done, 10) == 0
        assert b"".join(out) == b"got:ping\n"
        await session.close()

        sleeper = await sandbox.exec.start("sleep", args=["60"])
        assert sleeper.session_id in {s.session_id for s in await sandbox.exec.list()}
        await sleeper.kill()
        assert await asyncio.wait_for(sleeper.done, 10) != 0

        root = f"/tmp/corral-sdk-{uuid.uuid4().hex[:12]}"
        await sandbox.files.make_dir(f"{root}/d")
        await sandbox.files.write(f"{root}/a.txt", "héllo")
        assert await sandbox.files.read(f"{root}/a.txt") == "héllo"
        assert await sandbox.files.read_bytes(f"{root}/a.txt") == "héllo".encode()
        entries = {e.name: e for e in await sandbox.files.list(root)}
        assert entries["d"].is_dir and not entries["a.txt"].is_dir and entries["a.txt"].size == 6
        assert await sandbox.files.exists(f"{root}/a.txt")
        await sandbox.files.remove(root)
        assert not await sandbox.files.exists(f"{root}/a.txt")

        pty = await sandbox.pty.create(cols=80, rows=24)
        await pty.send("echo $((6*7))z\n")
        seen = b""
        async with asyncio.timeout(10):
            while b"42z" not in seen:
                seen += await pty.recv()
        await pty.close()

        await sandbox.set_timeout(600)
        again = await Sandbox.connect(sandbox.id, api_key=KEY, api_url=live.url)
        assert again.end_at is not None and again._token
        await again.close()
    finally:
        await sandbox.kill()
        assert not await sandbox.is_running()
        await sandbox.close()
