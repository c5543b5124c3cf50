"""The OpenComputer surface's pause and resume (corral's own routes) over the process
runtime: the sandbox's shape and status, the agent really stopped while paused, an
exec that resumes it, and 409s in the surface's envelope naming the state."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.runtime.process import ProcessRuntime
from tests.unit.api.conftest import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")


def agent_state(api: Api, sandbox_id: str) -> str:
    """The agent process's state letter in /proc (``T``: stopped)."""
    runtime = api.core.runtime
    assert isinstance(runtime, ProcessRuntime)
    pid = int((runtime.state_dir / sandbox_id / "agent.pid").read_text())
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def test_pause_resume_and_an_exec_that_resumes(api: Api) -> None:
    c = api.client
    sid = (await c.post("/api/sandboxes", json={"timeout": 0})).json()["sandboxID"]
    paused = await c.post(f"/api/sandboxes/{sid}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["sandboxID"] == sid and paused.json()["status"] == "paused"
    assert (await c.get(f"/api/sandboxes/{sid}")).json()["status"] == "paused"
    assert agent_state(api, sid) == "T"
    listed = {sb["sandboxID"]: sb["status"] for sb in (await c.get("/api/sandboxes")).json()}
    assert listed[sid] == "paused"
    ran = await c.post(f"/api/sandboxes/{sid}/exec/run", json={"cmd": "echo", "args": ["up"]})
    assert ran.status_code == 200 and ran.json()["stdout"] == "up\n"
    assert (await c.get(f"/api/sandboxes/{sid}")).json()["status"] == "running"
    assert agent_state(api, sid) != "T"
    await c.post(f"/api/sandboxes/{sid}/pause")
    resumed = await c.post(f"/api/sandboxes/{sid}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    await c.delete(f"/api/sandboxes/{sid}")


async def test_pause_and_resume_in_other_states_are_409_naming_the_state(api: Api) -> None:
    c = api.client
    sid = (await c.post("/api/sandboxes", json={"timeout": 0})).json()["sandboxID"]
    running = await c.post(f"/api/sandboxes/{sid}/resume")
    assert running.status_code == 409 and "is running" in running.json()["error"]
    await c.post(f"/api/sandboxes/{sid}/hibernate")
    hibernated = await c.post(f"/api/sandboxes/{sid}/pause")
    assert hibernated.status_code == 409 and "is hibernated" in hibernated.json()["error"]
    await c.delete(f"/api/sandboxes/{sid}")
    for action in ("pause", "resume"):
        stopped = await c.post(f"/api/sandboxes/{sid}/{action}")
        assert stopped.status_code == 409 and "is stopped" in stopped.json()["error"]
    missing = await c.post("/api/sandboxes/sb-doesnotexist01/pause")
    assert missing.status_code == 404
