"""Checkpoints, forks, restores, patches, hibernate/wake and Dockerfile templates, driven
by the real OpenComputer Python SDK (and raw HTTP where a client of the TypeScript SDK
sends something the Python one does not) against a real corral server on runc."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from opencomputer import Sandbox, Template
from opencomputer.sse import parse_sse_stream

from tests.e2e.conftest import Server
from tests.support.conditions import eventually_async

pytestmark = pytest.mark.e2e

# Every file the test writes, hashed inside the sandbox (sorted by path).
MANIFEST = "find /data /root -xdev -type f -print0 | sort -z | xargs -0 sha256sum"

DOCKERFILE = """\
FROM base
RUN useradd -m -u 1234 alice && echo built > /built.txt
ENV GREETING="hello from the image" MODE=image
WORKDIR /app
COPY <<EOF /app/greeting.txt
hi there
EOF
RUN <<EOF
set -e
echo multi > /app/ml.txt
chown -R alice /app
EOF
USER alice
"""


async def ready(sb: Sandbox, checkpoint_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any]:
        return dict({c["id"]: c for c in await sb.list_checkpoints()}[checkpoint_id])

    async def done() -> bool:
        return (await found())["status"] != "processing"

    await eventually_async(done, 10, "checkpoint stayed processing")
    return await found()


async def run(sb: Sandbox, script: str) -> str:
    result = await sb.exec.run(script)
    assert result.exit_code == 0, result.stderr
    return result.stdout


async def test_checkpoint_fork_restore_and_patches(server: Server, sandbox: Sandbox) -> None:
    sdk = {"api_url": server.url, "api_key": server.key}
    await run(
        sandbox, "mkdir -p /data/d && head -c 10485760 /dev/urandom > /data/big.bin && seq 1 500 > /data/d/n"
    )
    await sandbox.files.write("/data/a.txt", "one")
    before = await run(sandbox, MANIFEST)
    made = await sandbox.create_checkpoint("v1")
    assert made["status"] == "processing" and made["id"].startswith("cp-")
    cp = made["id"]
    await sandbox.files.write("/data/a.txt", "two")  # after the checkpoint: not in it
    done = await ready(sandbox, cp)
    assert done["status"] == "ready" and done["sizeBytes"] >= 10 * 1024 * 1024
    with pytest.raises(httpx.HTTPStatusError) as dup:
        await sandbox.create_checkpoint("v1")
    assert dup.value.response.status_code == 409

    first = await Sandbox.create_checkpoint_patch(cp, "echo one >> /data/patch.log", "first", **sdk)
    second = await Sandbox.create_checkpoint_patch(cp, "echo two >> /data/patch.log", **sdk)
    assert (first["patch"]["sequence"], second["patch"]["sequence"]) == (1, 2)
    fork = await Sandbox.create_from_checkpoint(cp, timeout=600, envs={"FORKED": "yes"}, **sdk)
    try:
        after = await run(fork, MANIFEST.replace("/root", "/root ! -name patch.log"))
        assert after == before  # every file, hashed, as it was at the checkpoint
        assert await run(fork, "cat /data/patch.log; echo $FORKED") == "one\ntwo\nyes\n"
        await fork.files.write("/data/fork.txt", "mine")
        assert not await sandbox.files.exists("/data/fork.txt")
        assert await sandbox.files.read("/data/a.txt") == "two"
    finally:
        await fork.kill()
        await fork.close()

    await Sandbox.create_checkpoint_patch(cp, "echo broken >&2; exit 7", **sdk)
    failing = await Sandbox.create_from_checkpoint(cp, timeout=600, **sdk)
    try:
        with server.http() as http:
            info = http.get(f"/sandboxes/{failing.sandbox_id}").json()
        assert [p["status"] for p in info["patches"]] == ["applied", "applied", "failed"]
        assert info["patches"][2]["exitCode"] == 7 and "exit code 7" in info["error"]
        assert info["status"] == "running"
    finally:
        await failing.kill()
        await failing.close()
    patches = await Sandbox.list_checkpoint_patches(cp, **sdk)
    await Sandbox.delete_checkpoint_patch(cp, patches[-1]["id"], **sdk)
    assert [p["sequence"] for p in await Sandbox.list_checkpoint_patches(cp, **sdk)] == [1, 2]

    await run(sandbox, "(sleep 1000 &) && rm /data/big.bin")
    await sandbox.restore_checkpoint(cp)
    assert await sandbox.files.read("/data/a.txt") == "one"
    assert await run(sandbox, MANIFEST) == before
    assert await run(sandbox, "pgrep -c sleep || true") == "0\n"  # processes are not kept
    await sandbox.delete_checkpoint(cp)
    assert await sandbox.list_checkpoints() == []


async def test_hibernate_wake_and_requests_that_wake(server: Server, sandbox: Sandbox) -> None:
    await sandbox.files.write("/root/kept.txt", "still here")
    await sandbox.hibernate()
    with server.http() as http:
        assert http.get(f"/sandboxes/{sandbox.sandbox_id}").json()["status"] == "hibernated"
        answer = http.post(f"/sandboxes/{sandbox.sandbox_id}/hibernate").json()
    assert answer["status"] == "hibernated" and answer["sizeBytes"] > 0 and answer["hibernationKey"]
    assert await run(sandbox, "cat /root/kept.txt") == "still here"  # the exec woke it
    assert await sandbox.is_running()

    await sandbox.hibernate()
    await sandbox.wake(timeout=600)
    assert sandbox.status == "running" and await sandbox.is_running()
    assert await sandbox.files.read("/root/kept.txt") == "still here"

    # The TypeScript SDK's files.* send X-OSB-Async-Wake: 1 and retry 503 {waking}.
    await sandbox.hibernate()
    headers = {"X-API-Key": server.key, "X-OSB-Async-Wake": "1"}
    url = f"{server.url}/api/sandboxes/{sandbox.sandbox_id}/files"
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        first = await http.get(url, params={"path": "/root/kept.txt"})
        assert first.status_code == 503 and first.json()["waking"] is True

        async def woken() -> bool:
            return (await http.get(url, params={"path": "/root/kept.txt"})).status_code != 503

        await eventually_async(woken, 10, "never woke")  # the wake goes on in the background
        again = await http.get(url, params={"path": "/root/kept.txt"})
    assert again.status_code == 200 and again.text == "still here"


async def test_templates_from_a_dockerfile(server: Server) -> None:
    async with httpx.AsyncClient(
        base_url=f"{server.url}/api", headers={"X-API-Key": server.key}, timeout=300
    ) as client:
        templates = Template._from_client(client)
        info = await templates.build("e2e-alice", DOCKERFILE)
        assert info.status == "ready" and info.template_id.startswith("tpl-")
        assert "e2e-alice" in {t.name for t in await templates.list()}
        assert (await templates.get("e2e-alice")).status == "ready"

        sb = await Sandbox.create(
            template="e2e-alice",
            timeout=600,
            envs={"MODE": "sandbox"},
            api_url=server.url,
            api_key=server.key,
        )
        try:
            out = await run(
                sb, 'id -un; pwd; echo "$GREETING/$MODE/$HOME"; cat greeting.txt ml.txt /built.txt'
            )
            assert out == "alice\n/app\nhello from the image/sandbox//home/alice\nhi there\nmulti\nbuilt\n"
            assert (await sb.exec.run("touch /root/nope")).exit_code != 0  # not root
            with pytest.raises(httpx.HTTPStatusError) as busy:
                await templates.delete("e2e-alice")
            assert busy.value.response.status_code == 409
        finally:
            await sb.kill()
            await sb.close()
        await templates.delete("e2e-alice")  # right after the kill: its teardown is awaited
        with pytest.raises(httpx.HTTPStatusError) as gone:
            await templates.get("e2e-alice")
        assert gone.value.response.status_code == 404

        logs: list[str] = []
        sse = {"Accept": "text/event-stream"}
        body = {"name": "e2e-broken", "dockerfile": "FROM base\nRUN echo going; false\n"}
        async with client.stream("POST", "/templates", json=body, headers=sse) as response:
            with pytest.raises(RuntimeError, match="Build failed"):
                await parse_sse_stream(response, logs.append)
        assert "going" in logs
        failed = (await client.get("/templates/e2e-broken")).json()
        assert failed["status"] == "failed" and failed["error"]
        body = {"name": "e2e-remote", "dockerfile": "FROM docker.io/library/debian:bookworm\nRUN true\n"}
        remote = (await client.post("/templates", json=body)).json()
        assert remote["status"] == "failed" and "FROM" in remote["error"]
        await client.delete("/templates/e2e-broken")
        await client.delete("/templates/e2e-remote")
    leftovers = list((server.data_dir / "templates").glob("e2e-*/.build-*"))
    builder = server.data_dir / "builder"
    argv = [
        "buildah",
        "--root",
        str(builder / "storage"),
        "--runroot",
        str(builder / "run"),
        "containers",
        "-q",
    ]
    listed = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    containers = (await listed.communicate())[0].split()
    assert leftovers == [] and containers == []
