"""An agent session through the real TypeScript SDK (``@opencomputer/sdk``'s
``sandbox.agent``, driven by ``tests/e2e/ts/agent_flow.mjs``): start, the file the
agent wrote, a follow-up, list, kill."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.agents.conftest import KEY, Server
from tests.support.fake_anthropic import Text, ToolUse, Turn

pytestmark = pytest.mark.integration
TS_DIR = Path(__file__).parent.parent / "e2e" / "ts"


def test_the_typescript_sdk_drives_an_agent_session(agents: Server) -> None:
    node = shutil.which("node")
    assert node, "node is not installed (make install installs it)"
    assert (TS_DIR / "node_modules" / "@opencomputer" / "sdk").is_dir(), "run make install"
    path = f"/tmp/ts-agent-{uuid.uuid4().hex[:8]}.txt"
    fake = agents.script(
        Turn([ToolUse("Bash", {"command": f"echo written by bash > {path}", "description": "write"})]),
        Turn([Text("Written with Bash.")]),
        Turn([Text("Follow-up done.")]),
    )
    env = {
        **agents.env,
        "OPENCOMPUTER_API_URL": agents.url,
        "OPENCOMPUTER_API_KEY": agents.key,
        "AGENT_FILE": path,
    }
    proc = subprocess.run(
        [node, "--experimental-websocket", str(TS_DIR / "agent_flow.mjs")],
        cwd=TS_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"agent_flow.mjs printed nothing (exit {proc.returncode}): {proc.stderr[-3000:]}"
    seen = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in seen, f"{seen}\n{proc.stderr[-3000:]}"
    assert seen["sessionId"].startswith("as-")
    assert seen["file"] == "written by bash\n"
    assert seen["toolUses"] == ["Bash"]
    assert seen["texts"] == ["Written with Bash.", "Follow-up done."]
    assert seen["types"][0] == "ready" and seen["types"].count("turn_complete") == 2
    assert "tool_result" in seen["types"] and "result" in seen["types"]
    [listed] = seen["listed"]
    assert listed["sessionID"] == seen["sessionId"] and listed["claudeSessionID"] == seen["claudeSessionID"]
    assert seen["exitCode"] != 0  # killed
    assert len(fake.scripted()) == 3 and {r.headers["x-api-key"] for r in fake.received} == {KEY}
